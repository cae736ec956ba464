"""``python -m bench``: run every benchmark of the project."""

from bench import metrics_panel

if __name__ == "__main__":
    raise SystemExit(metrics_panel.main())
