"""The GPU path: ids on the device, bf16 autocast, fused AdamW; skipped where torch sees no CUDA GPU."""

import numpy as np
import pytest
import torch

from chargen import checkpoint
from chargen.data import load_corpus
from chargen.generate import Generator
from chargen.training.batchers import StreamBatcher

from .conftest import train_tiny

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU that torch sees (nothing to install here)",
    ),
]


def test_windows_are_slices_of_ids_on_the_device(corpus_path):
    corpus = load_corpus(corpus_path, 0.1)
    batcher = StreamBatcher(corpus.train, 4, 32, "cuda", seed=1)
    cpu = StreamBatcher(corpus.train, 4, 32, "cpu", seed=1)
    assert batcher.ids.is_cuda
    for k in range(3):
        x, y = batcher.window(0, k)
        assert x.is_cuda and torch.equal(x.cpu(), cpu.window(0, k)[0]) and torch.equal(y.cpu(), cpu.window(0, k)[1])


def test_training_on_the_gpu_learns_and_loads_on_a_cpu(corpus_path, tmp_path):
    trainer, result = train_tiny(corpus_path, tmp_path, device="cuda", steps=80, eval_every=40)
    assert trainer.amp and all(s.dtype == torch.float32 for s in trainer.state)  # carried state stays fp32
    assert trainer.metrics[-1]["val_loss"] < trainer.metrics[0]["val_loss"]
    data = checkpoint.load(result.best_path)  # mapped to the CPU whatever wrote it
    assert all(t.device.type == "cpu" for t in data["model"].values())
    text = "".join(Generator.load(result.best_path, "cpu").generate("the", length=40, seed=1))
    assert len(text) == 40


def test_bf16_evaluation_is_close_to_fp32(corpus_path, tmp_path):
    from chargen.score import evaluate

    trainer, _ = train_tiny(corpus_path, tmp_path, device="cuda", steps=40, eval_every=40)
    full = evaluate(trainer.model, trainer.corpus.val, trainer.device, amp=False)
    half = evaluate(trainer.model, trainer.corpus.val, trainer.device, amp=True)
    assert abs(full - half) / full < 0.01


def test_a_deep_model_scores_a_text_whose_tail_continues_a_stream_on_the_gpu():
    """The tail's state is a slice of the streams' state: cuDNN takes it only when made contiguous."""
    from chargen.config import ModelConfig
    from chargen.model import CharLM
    from chargen.score import evaluate

    torch.manual_seed(0)
    model = CharLM(20, ModelConfig(layers=2, hidden=32, embed=8))
    ids = np.random.default_rng(0).integers(0, 20, 3 * 4096 + 100)  # three streams and a tail
    on_cpu = evaluate(model, ids, torch.device("cpu"))
    on_gpu = evaluate(model.cuda(), ids, torch.device("cuda"))
    assert abs(on_gpu - on_cpu) / on_cpu < 1e-3
