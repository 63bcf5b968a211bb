"""A ResNet as an image encoder: embeddings of image files, nearest-neighbour search and
retrieval quality (`embed.py`, installed as `resnet-jax-embed`).

    backbone    a run's (or a weights file's) network without its head: pooled features
    embeddings  image files -> L2-normalised embeddings; the .npz format, shards and merging
    search      exact cosine top-k on the devices in blocks, a faiss index where installed,
                recall@k and mAP of labelled queries against a labelled gallery
    jobs        what embed.py does: embed to a file, merge shards, search a gallery
"""
