"""Storage: where calls' state and files live, behind two seams.

`paths` names every file (one place); `artefacts` keeps finished files (`ArtefactStore`: the
local `responses/` folder now, S3-compatible storage later); `coordination` decides who owns a
call, whether it is live anywhere, its format choice and the stream-token secret (`Coordinator`:
file locks and files on one host now, Redis later); `store.CallStore` is what the rest asks.

Imports nothing of the app above it: no recording, call, agent or web.
"""
