"""`chargen export`: a model as one HTML page that writes in any browser, or as an ONNX graph for any runtime."""

from __future__ import annotations

import click

from chargen.cli import cli
from chargen.cli.options import checkpoint_option, resolve_checkpoint


@cli.command()
@checkpoint_option
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Write one self-contained page here.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="Write the one-step ONNX graph here.")
def export(checkpoint, html_path, onnx_path) -> None:
    """Write a model where torch is not: a web page, or ONNX for onnxruntime and other runtimes.

    The page opens offline in any modern browser and writes with the model (character models).
    The ONNX file is one step (ids and state in, logits and state out) with the vocabulary and
    settings in its metadata; it needs pip install "chargen[export]".

    \b
      chargen export -c shakespeare --html shakespeare.html
      chargen export -c checkpoints/novel/best.pt --onnx novel.onnx
    """
    from pathlib import Path

    from chargen.cli import console
    from chargen.errors import ChargenError

    if not html_path and not onnx_path:
        raise ChargenError("name what to write: --html PAGE.html, --onnx MODEL.onnx, or both")
    for path in filter(None, (html_path, onnx_path)):
        folder = Path(path).resolve().parent
        if not folder.is_dir():
            raise ChargenError(f"no folder {folder} to write {path} in: create it, or name another")
    if onnx_path:
        from chargen.export.onnx import need_onnx

        need_onnx()  # said before the model is read
    from chargen.export import Exported

    exported = Exported.load(resolve_checkpoint(checkpoint))
    if html_path:
        from chargen.export import html

        size = html.write(exported, html_path)
        console.info(f"wrote {html_path} ({size / 1e6:.1f} MB): open it in a browser, no server needed")
    if onnx_path:
        from chargen.export import onnx

        size = onnx.write(exported, onnx_path)
        console.info(f"wrote {onnx_path} ({size / 1e6:.1f} MB): one step of {exported.checkpoint.describe()}")
