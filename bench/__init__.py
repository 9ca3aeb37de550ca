"""daftscale's benchmark: every workload under every configuration a user has, side by side, in one run.

``python -m bench [--quick]``; see ``bench/README.md`` for what is measured and how.
"""
