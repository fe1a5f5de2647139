"""CharLM: embedding, a multi-layer recurrent core (LSTM, GRU or RNN), dropout, linear head.

A window runs through PyTorch's fused kernels (cuDNN on a GPU, oneDNN on a CPU): training,
evaluation and priming. Training with DropConnect on the recurrent weights or with locked
dropout runs the same kernels a layer at a time: the masks are drawn once per window, on the
weights and on each layer's input and output, never per step. Generation steps one token at a
time through the same weights, cell by cell (`step`). The model knows nothing of files or
screens: it maps ids and a carried state to logits and the next state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import _VF, Tensor, nn

from chargen.config import ModelConfig

State = tuple[Tensor, ...]  # (h, c) for an LSTM, (h,) otherwise; each (layers, B, hidden)

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # weight rows per hidden unit
_STEP_CELLS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}  # one step of one layer


def _lstm(x: Tensor, state: State, weights: list[Tensor]) -> tuple[Tensor, ...]:
    return _VF.lstm(x, state, weights, True, 1, 0.0, True, False, True)  # the fused call nn.LSTM makes


def _gru(x: Tensor, h: Tensor, weights: list[Tensor]) -> tuple[Tensor, ...]:
    return _VF.gru(x, h, weights, True, 1, 0.0, True, False, True)


def _rnn(x: Tensor, h: Tensor, weights: list[Tensor]) -> tuple[Tensor, ...]:
    return _VF.rnn_tanh(x, h, weights, True, 1, 0.0, True, False, True)


PRIOR_TOKENS = 10_000_000  # enough of a text to count its tokens' frequencies, however big it is
_LAYER_CALLS = {"lstm": _lstm, "gru": _gru, "rnn": _rnn}  # one layer over a window: (out, *final state)


def _locked(x: Tensor, p: float) -> Tensor:
    """Variational dropout of x (B, T, F): one mask per stream, the same at every step of the window."""
    if not p:
        return x
    return x * x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)


class CharLM(nn.Module):
    def __init__(self, vocab_size: int, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(vocab_size, config.embed)
        self.rnn = _CELLS[config.cell](
            config.embed,
            config.hidden,
            config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, vocab_size)

    def start_at_unigram(self, ids) -> None:
        """Set the head's bias to the log frequency of each token in `ids` (a numpy array; add-one smoothed, from at
        most its first PRIOR_TOKENS), so that a new model's first guess is the text's unigram, not a uniform one.
        From a uniform guess the first steps push down every token the text hardly has, all in one direction of the
        last hidden state: with a vocabulary of a thousand characters that saturated the recurrent units, and
        training stalled at the unigram (benchmarks/RESULTS.md, "A new model starts at the unigram")."""
        counts = torch.bincount(torch.from_numpy(ids[:PRIOR_TOKENS].astype("int64")), minlength=self.head.bias.numel())
        with torch.no_grad():
            self.head.bias.copy_(torch.log((counts + 1.0) / (counts.sum() + counts.numel())))

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        shape, dtype = (self.config.layers, batch_size, self.config.hidden), self.head.weight.dtype
        zeros = lambda: torch.zeros(shape, device=device, dtype=dtype)
        return (zeros(), zeros()) if self.config.cell == "lstm" else (zeros(),)

    def forward(self, x: Tensor, state: State | None = None, activations: bool = False) -> tuple:
        """x (B, T) ids -> logits (B, T, V) and the state after the last step; with `activations`, also the last
        layer's output (B, T, H) before and after its dropout, which activation regularisation penalises."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        state = tuple(s.contiguous() for s in state)  # cuDNN refuses a slice of a batch's state (CPUs take it)
        c = self.config
        if self.training and c.embed_drop:  # whole characters dropped, the same ones at every step of the batch
            keep = self.embed.weight.new_empty(self.embed.weight.shape[0], 1).bernoulli_(1 - c.embed_drop)
            emb = F.embedding(x, self.embed.weight * keep / (1 - c.embed_drop))  # (B, T, E)
        else:
            emb = self.embed(x)
        if self.training and (c.locked or c.weight_drop):
            raw, state = self._layer_by_layer(emb, state)
            h = (_locked if c.locked else F.dropout)(raw, c.dropout)
        else:
            raw, state = self.rnn(self.drop(emb), state if len(state) == 2 else state[0])  # (B, T, H)
            h, state = self.drop(raw), state if isinstance(state, tuple) else (state,)
        return (self.head(h), state, (raw, h)) if activations else (self.head(h), state)

    def _layer_by_layer(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Training with weight drop or locked dropout: each layer one fused call, with its hidden-to-hidden
        weights masked for this window and its input dropped by a mask per stream (locked) or per step; the
        last layer's output comes back undropped."""
        c, run = self.config, _LAYER_CALLS[self.config.cell]
        drop = _locked if c.locked else F.dropout
        finals = []
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.rnn.all_weights):
            if c.weight_drop:  # DropConnect: one mask over the matrix, for every step of the window
                w_hh = F.dropout(w_hh, c.weight_drop)
            layer_state = tuple(s[k : k + 1] for s in state)  # (1, B, H) each
            out = run(drop(x, c.dropout), layer_state if c.cell == "lstm" else layer_state[0], [w_ih, w_hh, b_ih, b_hh])
            x, final = out[0], out[1:]  # (B, T, H); (h,) or (h, c), each (1, B, H)
            finals.append(final)
        new = tuple(torch.cat([f[i] for f in finals]) for i in range(len(state)))
        return x, new  # the last layer's output, not yet dropped

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """One token per stream: x (B,) ids -> logits (B, V) and the next state.

        Each layer's cell runs directly: on a CPU the fused module's fixed cost per call is 7
        to 10 times the arithmetic of one step. The math is the same, without dropout: this
        is for inference (generation, chat), in eval mode.
        """
        cell = _STEP_CELLS[self.config.cell]
        inp, hs, cs = self.embed(x), [], []  # (B, E)
        for k, weights in enumerate(self.rnn.all_weights):  # [w_ih, w_hh, b_ih, b_hh] of layer k
            if self.config.cell == "lstm":
                h, c = cell(inp, (state[0][k], state[1][k]), *weights)
                cs.append(c)
            else:
                h = cell(inp, state[0][k], *weights)
            hs.append(h)
            inp = h  # (B, H)
        new = (torch.stack(hs), torch.stack(cs)) if cs else (torch.stack(hs),)
        return self.head(inp), new

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @staticmethod
    def shapes(vocab_size: int, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """{name: shape} of the state_dict that `CharLM(vocab_size, config)` has, without building it
        (so a checkpoint's weights can be checked before anything is allocated)."""
        gates, h = _GATES[config.cell], config.hidden
        shapes = {"embed.weight": (vocab_size, config.embed)}
        for k in range(config.layers):
            shapes[f"rnn.weight_ih_l{k}"] = (gates * h, config.embed if k == 0 else h)
            shapes[f"rnn.weight_hh_l{k}"] = (gates * h, h)
            shapes[f"rnn.bias_ih_l{k}"] = (gates * h,)
            shapes[f"rnn.bias_hh_l{k}"] = (gates * h,)
        return {**shapes, "head.weight": (vocab_size, h), "head.bias": (vocab_size,)}


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' is the GPU when there is one, else the CPU; a named device must exist here."""
    from chargen.errors import SettingError

    if isinstance(name, torch.device):
        name = str(name)
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SettingError(f"device must be one of auto, cpu, cuda or mps, not {name!r}", "device") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise SettingError(f"device must be one of auto, cpu, cuda or mps, not {name!r}", "device")
    if (device.type == "cuda" and not cuda) or (device.type == "mps" and not mps):
        raise SettingError(f"device {name}: torch sees no such device here; use cpu or auto", "device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SettingError(f"device {name}: there are {torch.cuda.device_count()} GPUs here", "device")
    return device


def detach(state: State) -> State:
    """The state's values without its history; kept in fp32 even when the window ran in bf16."""
    return tuple(s.detach().float() for s in state)
