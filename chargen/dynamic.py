"""Dynamic evaluation (Krause et al. 2018): a model that learns from each window of text as it reads it.

Each window of `learn_window` tokens is scored first, with the weights as they are, and only
then does the model take one gradient step on it (truncated BPTT, the state carried from the
window before), so a name or a line read minutes ago is likely again when it comes back, and no
score ever depends on an update that saw its token. The step is RMS-normalised per weight (a
running mean of squared gradients, as in RMSprop; Krause et al. take it from the training data,
this takes it from the text read so far) and every step pulls the weights back toward the
trained ones by `learn_decay`, so the model adapts to the text without forgetting its training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chargen.config import LearnConfig
from chargen.model import CharLM, State, detach

BETA = 0.99  # the running mean of squared gradients forgets at this rate per step
EPS = 1e-8


class Learner:
    """Reads text with `model`, adapting it in place (give it a copy to keep the original)."""

    def __init__(self, model: CharLM, config: LearnConfig | None = None) -> None:
        self.model, self.config = model, config or LearnConfig()
        for module in model.modules():  # learning from a text, not regularising: no dropout
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        model.rnn.dropout = 0.0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.trained = [p.detach().clone() for p in self.params]
        self.square = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def read(
        self, ids: np.ndarray, state: State | None = None, scores: list[float] | None = None
    ) -> tuple[float, State]:
        """Score every ids[i+1] given ids[:i+1] (and `state`), learning from each window after scoring it.

        Returns the total nats and the state after ids[-2], the last token read as an input;
        each token's nats are appended to `scores` when it is given."""
        device = next(self.model.parameters()).device
        if state is not None:  # a state made under inference mode cannot enter a graph; a copy can
            state = tuple(s.clone() for s in state)
        x_all = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)
        total = torch.zeros((), dtype=torch.float64, device=device)
        n = len(x_all) - 1
        self.model.train()  # a GPU's fused RNN runs backward only in training mode; dropout is off
        try:
            for lo in range(0, n, self.config.learn_window):
                hi = min(lo + self.config.learn_window, n)
                logits, new_state = self.model(x_all[lo:hi][None], state)  # (1, T, V)
                losses = F.cross_entropy(logits[0].float(), x_all[lo + 1 : hi + 1], reduction="none")  # (T,)
                total += losses.detach().sum()
                if scores is not None:
                    scores.extend(losses.tolist())
                self._step(losses.mean())
                # Truncated BPTT: the next window starts from this state, with no gradient through it.
                state = detach(new_state)
        finally:
            self.model.eval()
        return float(total), state

    def _step(self, loss: torch.Tensor) -> None:
        self.model.zero_grad(set_to_none=True)
        loss.backward()
        self.steps += 1
        lr, decay = self.config.learn_rate, self.config.learn_decay
        with torch.no_grad():
            for p, square, trained in zip(self.params, self.square, self.trained):
                square.mul_(BETA).addcmul_(p.grad, p.grad, value=1 - BETA)
                rms = (square / (1 - BETA**self.steps)).sqrt_().add_(EPS)
                p.addcdiv_(p.grad, rms, value=-lr)
                p.add_(trained - p, alpha=decay)

    def reset(self) -> None:
        """Back to the trained weights, with nothing learnt."""
        with torch.no_grad():
            for p, trained, square in zip(self.params, self.trained, self.square):
                p.copy_(trained)
                square.zero_()
        self.steps = 0

    # -- what a session saves to go on learning where it stopped --------------------------------

    def state_dict(self) -> dict:
        return {"weights": self.model.state_dict(), "square": list(self.square), "steps": self.steps}

    def load_state_dict(self, data: dict) -> None:
        """Weights and statistics saved by `state_dict`; ValueError when they do not fit this model."""
        square, steps = data["square"], data["steps"]
        if (
            not isinstance(steps, int)
            or steps < 0
            or not isinstance(square, list)
            or len(square) != len(self.square)
            or not all(isinstance(s, torch.Tensor) and s.shape == t.shape for s, t in zip(square, self.square))
        ):
            raise ValueError("its learning statistics do not fit this model")
        try:
            self.model.load_state_dict(data["weights"])
        except (RuntimeError, TypeError, AttributeError):
            raise ValueError("its learnt weights do not fit this model") from None
        device = self.square[0].device
        self.square, self.steps = [s.to(device, t.dtype) for s, t in zip(square, self.square)], steps
