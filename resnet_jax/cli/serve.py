"""Serves a run over HTTP: classification, embeddings and image search, batched on the device,
with a page to look at the results (needs the serve extra: pip install -e '.[train,serve]').

    python serve.py --workdir W [--gallery G.npz] [--checkpoint best|latest|STEP] \\
        [--host 127.0.0.1] [--port 8000] [--api_key KEY] [--max_batch_size 16]

Open http://127.0.0.1:8000/ for the page; the endpoints (resnet_jax/serve/app.py):
POST /v1/classify, /v1/embed, /v1/search?top_k=K, /v1/gallery?name=NAME with the image as the
body (Content-Type: image/...) or as the multipart field `file`; GET /v1/model, /healthz,
/readyz (ready once every batch shape is compiled), /metrics (Prometheus).

    curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' localhost:8000/v1/classify

Concurrent requests are gathered into batches of up to --max_batch_size within
--max_delay_ms, padded to a few batch shapes compiled at start-up. --gallery: an embeddings
file that embed.py wrote with this run (or a new file: the first image added creates it).
SIGTERM or Ctrl-C: stops accepting, answers what it accepted, exits 0. It binds 127.0.0.1
unless --host says otherwise; with --api_key (or RESNET_JAX_API_KEY) every endpoint but the
health checks and the page needs `Authorization: Bearer KEY`. Ray Serve, for replicas over
devices and machines: python -m resnet_jax.serve.ray_app --help.
"""

import os

from absl import flags

from resnet_jax.cli import flags as cli
from resnet_jax.serve import API_KEY_VARIABLE

flags.DEFINE_string("workdir", None, "The run to serve.")
cli.define_checkpoint_flag()
flags.DEFINE_string("gallery", None, "The embeddings file (.npz, embed.py) to search and add "
                    "to; created by the first image added if it does not exist.")
flags.DEFINE_string("host", "127.0.0.1", "The address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 8000, "The port to listen on (0: any free one, printed).")
flags.DEFINE_string("api_key", None, f"A token every request but the health checks must send "
                    f"as 'Authorization: Bearer KEY' (default: ${API_KEY_VARIABLE}; none).")
flags.DEFINE_integer("max_batch_size", 16, "The most images in one forward pass.")
flags.DEFINE_float("max_delay_ms", 5.0, "How long a batch waits for more images once one came.")
flags.DEFINE_float("max_body_mb", 20.0, "The largest request body, in MiB.")
FLAGS = flags.FLAGS


def main(argv):
    import sys

    from resnet_jax import environment, extras
    from resnet_jax.errors import UserError

    extras.require_extra("serve", "serving")
    from resnet_jax.serve import server
    from resnet_jax.serve.service import Service

    if not FLAGS.workdir:
        raise UserError("--workdir W names the run to serve: set it")
    if FLAGS.max_delay_ms < 0 or FLAGS.max_body_mb <= 0:
        raise UserError("--max_delay_ms must be >= 0 and --max_body_mb > 0")
    listening = server.listen(FLAGS.host, FLAGS.port)  # a taken port: one line, at once
    service = Service.load(FLAGS.workdir, FLAGS.checkpoint, FLAGS.gallery, FLAGS.max_batch_size)
    run = service.engine.run
    environment.announce(run.plan.model.kernels, run.plan.model.dtype, file=sys.stderr)
    server.serve(service, listening,
                 api_key=FLAGS.api_key or os.environ.get(API_KEY_VARIABLE) or None,
                 max_delay_s=FLAGS.max_delay_ms / 1000,
                 max_body_bytes=int(FLAGS.max_body_mb * 2**20), name=FLAGS.workdir)


def run():
    cli.run(main, "serving")


if __name__ == "__main__":
    run()
