"""Recordings: one SQLite file (the store) holding the ledger, the jobs and a snapshot per
interval, written headless and read back by replay and report.

- ``codec``: the snapshot encodings (``zblock1``: blocks of keyframes and deltas under
  zlib, since schema 4; ``zdelta1``: one zlib'd keyframe or delta per row, still read);
- ``recorder``: the headless recorder (engine + snapshot loop + clean stop);
- ``writer``: what it writes (snapshot blocks; packing the ledger and finished jobs into
  blocks, ``Store.pack``; retention);
- ``reader``: ``Recording``, what replay and report read through (the store's schema
  check, snapshots and ledger by time range, the daily totals retention keeps);
- ``timespec``: the one time grammar of ``report --since/--until`` and replay's go-to;
- ``replay``: the replay engine (and the app, imported only when shown);
- ``report``: the metrics of a recording.

The package itself imports nothing heavy: import the module you need.
"""
