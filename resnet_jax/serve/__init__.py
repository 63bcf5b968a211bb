"""A run served over HTTP: classification, embeddings and image search, batched on the device,
with a page to look at the results, metrics and health checks.

    engine     the run's model compiled for a few batch shapes: logits and embeddings at once
    batching   concurrent requests gathered into batches (the single-process server)
    gallery    the searched gallery, in memory, grown by the service
    service    a request's image bytes -> the answer (framework-free)
    app        the FastAPI app: endpoints, errors as JSON, the token, the body limit
    metrics    Prometheus counters and histograms
    page       the page at /
    server     the single-process server: uvicorn, the batching, the drain on SIGTERM
    ray_app    the same app on Ray Serve, replicas and Ray's batching

The command is `resnet-jax-serve` (resnet_jax/cli/serve.py); docs/serving.md is the guide.
"""

API_KEY_VARIABLE = "RESNET_JAX_API_KEY"  # the API key, where --api_key is not given
