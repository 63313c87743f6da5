"""code.data: repository-context FIM samples packed into token shards (`domainfm code pack`).

`pack.pack_corpus` writes the shards, `shards.PackedDataset` reads them (memory-mapped).
"""
