"""Dynamic evaluation (Krause et al. 2018): a model that learns from each window of text as it reads it.

Each window of `learn_window` tokens is scored first, with the weights as they are, and only
then does the model take one gradient step on it (truncated BPTT, the state carried from the
window before), so a name or a line read minutes ago is likely again when it comes back, and no
score ever depends on an update that saw its token. The step is RMS-normalised per weight (Adam
with no momentum: a running mean of squared gradients, bias-corrected; Krause et al. take that
mean from the training data, this takes it from the text read so far) and every step pulls the
weights back toward the trained ones by `learn_decay`, so the model adapts to the text without
forgetting its training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chargen.config import LearnConfig
from chargen.model import CharLM, State, detach

BETA = 0.99  # the running mean of squared gradients forgets at this rate per step


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
        self.reset()

    def reset(self) -> None:
        """Back to the trained weights, with nothing learnt."""
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.trained)
        fused = self.params[0].device.type in ("cpu", "cuda")  # one kernel for all weights
        self.optimizer = torch.optim.Adam(self.params, lr=self.config.learn_rate, betas=(0.0, BETA), fused=fused)

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
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():  # each weight a little of the way back to its trained value
            torch._foreach_lerp_(self.params, self.trained, self.config.learn_decay)

    # -- what a session saves to go on learning where it stopped --------------------------------

    def state_dict(self) -> dict:
        return {"weights": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, data: dict) -> None:
        """Weights and statistics saved by `state_dict`; ValueError when they do not fit this model."""
        try:
            self.model.load_state_dict(data["weights"])
            self.optimizer.load_state_dict(data["optimizer"])
            for p in self.params:
                for value in self.optimizer.state.get(p, {}).values():
                    if isinstance(value, torch.Tensor) and value.dim() and value.shape != p.shape:
                        raise ValueError("its learning statistics are of another shape")
        except (RuntimeError, TypeError, AttributeError, KeyError, ValueError) as e:
            self.reset()
            raise ValueError(f"its learnt weights do not fit this model ({e})") from None
