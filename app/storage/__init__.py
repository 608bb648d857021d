"""Storage: where calls' state and files live, behind three seams.

`paths` names every file (one place); `artefacts` keeps finished files (`ArtefactStore`: the
local `responses/` folder now, S3-compatible storage later); `coordination` decides who owns a
call, whether it is live anywhere, its format choice and the stream-token secret (`Coordinator`:
file locks and files on one host now, Redis later); `catalog` lists the calls, one row a call, for
listings, filters and search (`Catalog`: a SQLite file on one host now, `sqlite_catalog`; a
cluster-wide backing later); `store.CallStore` is what the rest asks.

Imports nothing of the app above it: no recording, call, agent or web.
"""
