import numpy as np

from chargen.tokenizer import CharTokenizer, id_dtype, tokenizer_from_dict

MIXED = "Hello, мир! 你好，世界。🙂👍🏽 naïve café\n\tend  "


def test_round_trip_mixed_scripts():
    tok = CharTokenizer.fit([MIXED])
    ids = tok.encode(MIXED)
    assert tok.decode(ids.tolist()) == MIXED
    assert len(ids) == len(MIXED)
    assert tok.unk_id not in ids


def test_most_frequent_first_and_serialisable():
    tok = CharTokenizer.fit(["aaab", "bc"])
    assert tok.chars[1:] == ["a", "b", "c"]
    again = tokenizer_from_dict(tok.to_dict())
    assert again.chars == tok.chars
    assert again.fingerprint() == tok.fingerprint()
    assert CharTokenizer.fit(["abd"]).fingerprint() != tok.fingerprint()


def test_unknown_characters_map_to_unk_and_are_reported():
    tok = CharTokenizer.fit(["abc"])
    ids = tok.encode("abzcé")
    assert ids.tolist() == [tok.encode("a")[0], tok.encode("b")[0], 0, tok.encode("c")[0], 0]
    assert tok.unknown("abzcéz") == ["z", "é"]


def test_large_vocabularies_widen_the_id_type():
    cjk = "".join(chr(0x4E00 + i) for i in range(3000))
    tok = CharTokenizer.fit([cjk])
    assert tok.vocab_size == 3001
    assert tok.encode(cjk).dtype == np.uint16
    assert tok.decode(tok.encode(cjk).tolist()) == cjk
    assert id_dtype(256) == np.uint8 and id_dtype(257) == np.uint16 and id_dtype(70000) == np.uint32
