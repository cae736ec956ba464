"""Writing rendered report files under the report root: a local folder or ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from qmtl_validation.core.reports.files import atomic_write_bytes
from qmtl_validation.warehouse.lake import Lake, split_s3_uri

_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".md": "text/markdown; charset=utf-8", ".png": "image/png"}


def write_files(root: str, folder: str, files: Mapping[str, bytes], *, lake: Lake) -> dict[str, str]:
    """Write ``files`` under ``<root>/<folder>/``; returns ``{file name: path or s3 URI}``.

    Local files are replaced atomically; on S3 each file is one put (readers see the old or the
    new object, never half of one). An S3 root reuses the lake's client.
    """
    written: dict[str, str] = {}
    if root.startswith("s3://"):
        bucket, prefix = split_s3_uri(root)
        for name, data in files.items():
            key = "/".join(p for p in (prefix, folder, name) if p)
            lake.s3_client.put_object(
                Bucket=bucket, Key=key, Body=data,
                ContentType=_CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"),
            )
            written[name] = f"s3://{bucket}/{key}"
        return written
    for name, data in files.items():
        written[name] = str(atomic_write_bytes(Path(root) / folder / name, data))
    return written
