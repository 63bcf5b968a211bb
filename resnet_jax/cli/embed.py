"""Embeds image files with a ResNet's pooled features, and finds similar images.

    python embed.py --workdir W --output E.npz PATH...          # a run of this project
    python embed.py --config configs/folder.py --config.model=resnet50 \\
        --config.init_from=resnet50.pth --output E.npz PATH...   # a weights file
    python embed.py --gallery E.npz [--top_k 5] [--json] QUERY...  # image search
    python embed.py --shard K/N ...; python embed.py --merge --output E.npz E0.npz E1.npz ...
    python embed.py --workdir W --output E.npz --append MORE...  # add to a gallery

PATH, QUERY: image files or folders (searched recursively); QUERY may also be one .npz made
here. Each image is preprocessed exactly as the run's evaluation does; its embedding is the
globally pooled features, L2-normalised (the .npz format: resnet_jax/retrieval/embeddings.py).
Where the images sit in class folders (DIR/CLASS/FILE) their labels are kept, and a search of
labelled queries against a labelled gallery prints and writes recall@1, recall@5 and mAP.
Search prints each query's nearest gallery images by cosine similarity; with --json, one
{"path": ..., "neighbors": [{"path": ..., "similarity": ..., "class": ...}]} per line.
"""

from absl import app, flags
from ml_collections import config_flags

from resnet_jax.cli import flags as cli

flags.DEFINE_string("workdir", None, "The run whose model embeds.")
cli.define_checkpoint_flag()
config_flags.DEFINE_config_file(
    "config", None, "Instead of --workdir: a config whose init_from names the weights.",
    lock_config=True)
flags.DEFINE_string("output", None, "The embeddings file to write (.npz).")
flags.DEFINE_string("gallery", None, "Search this embeddings file with the query images.")
flags.DEFINE_integer("top_k", 5, "Neighbours per query.")
flags.DEFINE_bool("json", False, "Search results as one JSON object per query and line.")
flags.DEFINE_enum("index", "exact", ["exact", "faiss"],
                  "exact: every similarity, on the devices; faiss: an HNSW index "
                  "(approximate; pip install faiss-cpu).")
flags.DEFINE_string("quality_output", None, "Where the retrieval quality goes (JSON); "
                    "default: beside the gallery, GALLERY.retrieval.json.")
flags.DEFINE_integer("batch_size", 32, "Images per forward pass (a multiple of the devices).")
flags.DEFINE_string("shard", "", "K/N: embed only the K-th of N shares of the images (merge "
                    "the N outputs with --merge).")
flags.DEFINE_bool("merge", False, "Merge the shards given as arguments into --output.")
flags.DEFINE_bool("append", False, "Add the images to the gallery --output names (embedded by "
                  "the same model), rather than write a new one.")
FLAGS = flags.FLAGS


def main(argv):
    from resnet_jax.errors import UserError
    from resnet_jax.retrieval import backbone as backbones
    from resnet_jax.retrieval import jobs

    arguments = argv[1:]
    if not arguments:
        raise app.UsageError("give image files or folders (or, with --merge, shard files)")
    if FLAGS.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {FLAGS.batch_size}")
    if FLAGS.merge:
        if not FLAGS.output:
            raise UserError("--merge writes the merged embeddings to --output: set it")
        jobs.merge_files(arguments, FLAGS.output)
        return
    if FLAGS.workdir is not None and FLAGS.config is not None:
        raise app.UsageError("give --workdir W (a run) or --config CFG, not both")
    backbone = None
    if FLAGS.workdir is not None:
        backbone = backbones.from_workdir(FLAGS.workdir, FLAGS.checkpoint)
    elif FLAGS.config is not None:
        backbone = backbones.from_config(FLAGS.config)
    if FLAGS.gallery:
        jobs.search_gallery(FLAGS.gallery, arguments, FLAGS.top_k, backbone=backbone,
                            batch_size=FLAGS.batch_size, index=FLAGS.index,
                            as_json=FLAGS.json, quality_output=FLAGS.quality_output)
        return
    if backbone is None:
        raise app.UsageError("give --workdir W or --config CFG with --config.init_from=WEIGHTS "
                             "(the model that embeds), or --gallery E.npz to search")
    if not FLAGS.output:
        raise UserError("--output E.npz is where the embeddings go: set it")
    jobs.embed_to_file(backbone, arguments, FLAGS.output, FLAGS.batch_size, FLAGS.shard,
                       FLAGS.append)


main.takes_arguments = True


def run():
    cli.run(main, "embedding")


if __name__ == "__main__":
    run()
