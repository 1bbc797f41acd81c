"""The model contract: what training writes and serving reads.

`spec` (the feature names and encodings a version carries), `inputs` (the rankers' input matrix), `layout` (every
path inside a version's folder), `bundle` (a whole version in memory), `registry` (versions and `latest`), `ids`,
`user_encoder` (the numpy user tower) and `rankers` (the ranker interface and one module per ranker).
Serving imports this package, never `recsys.training`.
"""
