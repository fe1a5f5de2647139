"""The ONNX export: `CharLM.step` as one graph (ids and state in, logits and state out) for any ONNX runtime.

The graph is written op by op with the cells' own equations and PyTorch's gate orders (LSTM i, f, g, o;
GRU r, z, n with the n gate's hidden bias inside r * (...)), so it is exactly the one-step path chargen samples
with, in float32, at any batch size. Inputs: `ids` (batch,) int64 and `h` (and `c` for an LSTM), each
(layers, batch, hidden) float32; outputs: `logits` (batch, vocab), then `h` and `c` after the step, in the
inputs' order. The file's metadata holds the vocabulary (`chargen.chars`: the character of each id; or the
SentencePiece model in `chargen.tokenizer`), the ids never to sample (`chargen.banned`), the model's settings
(`chargen.model`) and what it is (`chargen.about`), each as JSON.
"""

from __future__ import annotations

import base64
import json
import os

import numpy as np

from chargen.errors import ChargenError
from chargen.export import Exported

OPSET = 17  # ONNX 1.12 and later, onnxruntime 1.12 and later
IR_VERSION = 8


def need_onnx():
    """The onnx package, or one line that says how to install it."""
    try:
        import onnx
    except ImportError:
        raise ChargenError('the ONNX export needs the onnx package: pip install "chargen[export]"') from None
    return onnx


def graph(exported: Exported):
    """The one-step model as an onnx.ModelProto, checked by onnx's checker."""
    onnx = need_onnx()
    from onnx import TensorProto, helper, numpy_helper

    model, ckpt = exported.model, exported.checkpoint
    cfg, vocab = model.config, ckpt.vocab_size
    weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(array, name))
        return name

    def op(kind, inputs, name, **attrs):
        nodes.append(helper.make_node(kind, inputs, [name], name=name, **attrs))
        return name

    def linear(x, weight, bias, name):  # x @ weight.T + bias
        product = op("MatMul", [x, const(f"{weight}.T", weights[weight].T.copy())], f"{name}.mm")
        return op("Add", [product, const(bias, weights[bias])], name)

    hidden = cfg.hidden
    parts = {"lstm": ("h", "c"), "gru": ("h",), "rnn": ("h",)}[cfg.cell]
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cfg.cell]
    split = const("split", np.full(gates, hidden, dtype=np.int64)) if gates > 1 else None
    axis0 = const("axis0", np.array([0], dtype=np.int64))
    x = op("Gather", [const("embed.weight", weights["embed.weight"]), "ids"], "embedded")
    new = {p: [] for p in parts}
    for k in range(cfg.layers):
        layer = const(f"layer{k}", np.array(k, dtype=np.int64))
        state = {p: op("Gather", [p, layer], f"{p}{k}", axis=0) for p in parts}  # (batch, hidden)
        gi = linear(x, f"rnn.weight_ih_l{k}", f"rnn.bias_ih_l{k}", f"gi{k}")
        gh = linear(state["h"], f"rnn.weight_hh_l{k}", f"rnn.bias_hh_l{k}", f"gh{k}")
        if cfg.cell == "lstm":
            both = op("Add", [gi, gh], f"gates{k}")
            names = [f"{g}{k}" for g in "ifgo"]
            nodes.append(helper.make_node("Split", [both, split], names, name=f"split{k}", axis=1))
            i, f, g, o = (op(fn, [n], f"{n}.act") for fn, n in zip(("Sigmoid", "Sigmoid", "Tanh", "Sigmoid"), names))
            c = op("Add", [op("Mul", [f, state["c"]], f"fc{k}"), op("Mul", [i, g], f"ig{k}")], f"c{k}.new")
            h = op("Mul", [o, op("Tanh", [c], f"c{k}.tanh")], f"h{k}.new")
            new["c"].append(c)
        elif cfg.cell == "gru":
            ins, hs = [f"i{g}{k}" for g in "rzn"], [f"h{g}{k}" for g in "rzn"]
            nodes.append(helper.make_node("Split", [gi, split], ins, name=f"split_i{k}", axis=1))
            nodes.append(helper.make_node("Split", [gh, split], hs, name=f"split_h{k}", axis=1))
            r = op("Sigmoid", [op("Add", [ins[0], hs[0]], f"r{k}.in")], f"r{k}")
            z = op("Sigmoid", [op("Add", [ins[1], hs[1]], f"z{k}.in")], f"z{k}")
            n = op("Tanh", [op("Add", [ins[2], op("Mul", [r, hs[2]], f"rh{k}")], f"n{k}.in")], f"n{k}")
            moved = op("Mul", [z, op("Sub", [state["h"], n], f"h_minus_n{k}")], f"zhn{k}")
            h = op("Add", [n, moved], f"h{k}.new")  # n + z * (h - n), as ATen writes it
        else:
            h = op("Tanh", [op("Add", [gi, gh], f"pre{k}")], f"h{k}.new")
        new["h"].append(h)
        x = h
    logits = linear(x, "head.weight", "head.bias", "logits")
    for p in parts:
        stacked = [op("Unsqueeze", [s, axis0], f"{s}.u") for s in new[p]]
        op("Concat", stacked, f"{p}_out", axis=0)

    def state_info(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [cfg.layers, "batch", hidden])

    g = helper.make_graph(
        nodes,
        "chargen_step",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]), *map(state_info, parts)],
        [
            helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", vocab]),
            *(state_info(f"{p}_out") for p in parts),
        ],
        inits,
    )
    proto = helper.make_model(
        g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="chargen", ir_version=IR_VERSION
    )
    proto.doc_string = __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
    helper.set_model_props(proto, metadata(exported))
    onnx.checker.check_model(proto)
    return proto


def metadata(exported: Exported) -> dict[str, str]:
    """The file's metadata: vocabulary, banned ids, settings and summary, each as JSON text."""
    tok = exported.checkpoint.tokenizer
    plain = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in tok.to_dict().items()}
    props = {
        "chargen.tokenizer": json.dumps(plain),
        "chargen.banned": json.dumps(tok.banned_ids()),
        "chargen.model": json.dumps(exported.model.config.to_dict()),
        "chargen.about": json.dumps(exported.about()),
    }
    if tok.kind == "char":
        props["chargen.chars"] = json.dumps(tok.chars)
    return props


def write(exported: Exported, path: str | os.PathLike) -> int:
    """Write the graph to `path` atomically; its size in bytes."""
    from chargen.files import atomic_write

    data = graph(exported).SerializeToString()
    with atomic_write(path) as f:
        f.write(data)
    return len(data)
