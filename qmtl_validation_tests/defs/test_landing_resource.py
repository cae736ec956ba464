"""The landing-zone resource over S3: the client is dagster-aws ``S3Resource.get_client()`` and a
scan lists only the look-back's date prefixes (moto's S3 server on loopback)."""

import datetime as dt

from dagster_aws.s3 import S3Resource

from qmtl_validation.defs.resources import LandingZoneResource
from qmtl_validation.warehouse.landing import LocalLandingZone, S3LandingZone, find_run_bundles
from qmtl_validation_tests.dagster_harness import Drops, bundle

TODAY = dt.date(2026, 11, 27)


def test_an_s3_root_is_read_through_the_dagster_aws_client_with_bounded_listing(s3_bucket):
    resource = LandingZoneResource(
        root=s3_bucket.uri("landing"),
        s3=S3Resource(endpoint_url=s3_bucket.server.url, region_name=s3_bucket.server.region),
    )
    zone = resource.zone()
    assert isinstance(zone, S3LandingZone) and zone.uri() == f"s3://{s3_bucket.name}/landing/"
    assert zone.client.meta.endpoint_url == s3_bucket.server.url
    drops = Drops(s3_bucket.uri("landing"), s3_bucket.client)
    drops.put(bundle("beta_growth", "s1", "r1", day=TODAY))
    drops.put(bundle("beta_growth", "old", "r1", day=TODAY - dt.timedelta(days=30)))
    scan = find_run_bundles(zone, TODAY, 1)
    assert [b.partition_key for b in scan.bundles] == ["beta_growth/s1/r1"]
    assert zone.listed_prefixes == ["runs/2026-11-26/", "runs/2026-11-27/"]
    assert zone.list_calls == 2


def test_a_local_root_needs_no_client(tmp_path):
    zone = LandingZoneResource(root=str(tmp_path)).zone()
    assert isinstance(zone, LocalLandingZone) and zone.root == tmp_path.resolve()
