"""``python -m daftscale``: the ``daftscale`` command (:mod:`daftscale.cli`)."""

from daftscale.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
