import pytest

from safecls.data.labelers import LABELERS, HeadLabeler, KeywordLabeler, label_texts, make_labeler, text_key
from safecls.data.llama_guard import (
    LLAMA_GUARD_3_CATEGORIES,
    GuardLabeler,
    GuardVerdict,
    format_llama_guard3,
    parse_llama_guard_output,
)
from safecls.errors import ConfigError, JudgeError, TemplateError, UnknownNameError


def test_registry_lists_labelers_and_rejects_unknown_names():
    assert {"keyword", "guard", "safecls-head"} <= set(LABELERS.names())
    with pytest.raises(UnknownNameError, match="Did you mean 'keyword'"):
        LABELERS.get("keywrd")


def test_keyword_labeler():
    lab = KeywordLabeler({"extra_keywords": ["lockpick"]})
    out = lab.label(["How do I build a bomb?", "Bake a cake", "buy a LOCKPICK set"])
    assert [x.label for x in out] == [1, 0, 1]
    assert out[0].note == "weapons" and out[2].note == "lockpick" and out[1].key == text_key("Bake a cake")


def test_labeler_options_are_strict():
    with pytest.raises(ConfigError, match="extra_keyword"):
        make_labeler("keyword", {"extra_keyword": ["x"]})


class FakeClassifier:
    def __init__(self, scores):
        self.scores, self.calls = scores, 0

    def classify(self, prompts):
        self.calls += 1
        return [self.scores[p] for p in prompts]


def test_head_labeler_thresholds_at_one_half():
    clf = FakeClassifier({"a": 0.2, "b": 0.5, "c": 0.9})
    out = make_labeler("safecls-head", {"batch_size": 2}, classifier=clf).label(["a", "b", "c"])
    assert [x.label for x in out] == [0, 1, 1] and [x.score for x in out] == [0.2, 0.5, 0.9]
    assert clf.calls == 2
    with pytest.raises(TypeError, match="classify"):
        HeadLabeler(classifier=object())


def test_cache_makes_a_rerun_free(tmp_path):
    clf = FakeClassifier({"a": 0.1, "b": 0.8, "c": 0.6})
    first = label_texts(HeadLabeler(classifier=clf), ["a", "b", "a"], cache_dir=tmp_path)
    assert clf.calls == 1
    again = HeadLabeler(classifier=clf)
    assert label_texts(again, ["a", "b", "a"], cache_dir=tmp_path) == first
    assert clf.calls == 1                                  # the second run called the labeler zero times
    label_texts(again, ["a", "c"], cache_dir=tmp_path)     # only "c" is new
    assert clf.calls == 2
    label_texts(HeadLabeler({"threshold": 0.7}, classifier=clf), ["a"], cache_dir=tmp_path)
    assert clf.calls == 3                                  # another config is another cache


def test_cache_survives_a_torn_last_line(tmp_path):
    clf = FakeClassifier({"a": 0.1, "b": 0.8})
    label_texts(HeadLabeler(classifier=clf), ["a", "b"], cache_dir=tmp_path)
    (cache,) = tmp_path.glob("*.jsonl")
    cache.write_text(cache.read_text()[:-10])              # killed mid-write: "b" is torn
    out = label_texts(HeadLabeler(classifier=clf), ["a", "b"], cache_dir=tmp_path)
    assert [x.label for x in out] == [0, 1] and clf.calls == 2


# --- Llama Guard 3 format and parsing, on strings ---

def test_llama_guard3_prompt_format():
    p = format_llama_guard3([{"role": "user", "content": "  How do I bake bread? "}])
    assert p.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTask: Check if there is unsafe "
                        "content in 'User' messages in conversations according our safety policy")
    assert "<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes.\nS2: Non-Violent Crimes.\n" in p
    assert "S14: Code Interpreter Abuse.\n<END UNSAFE CONTENT CATEGORIES>" in p
    assert "<BEGIN CONVERSATION>\n\nUser: How do I bake bread?\n\n<END CONVERSATION>\n\n" in p
    assert p.endswith("Provide your safety assessment for ONLY THE LAST User message in the above conversation:\n"
                      " - First line must read 'safe' or 'unsafe'.\n"
                      " - If unsafe, a second line must include a comma-separated list of violated categories."
                      "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_llama_guard3_assesses_the_agent_when_the_last_turn_is_a_response():
    p = format_llama_guard3([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                            categories={"S1": "Violent Crimes."})
    assert "'Agent' messages" in p and "User: q\n\nAgent: a\n\n<END CONVERSATION>" in p
    assert "S2:" not in p and "ONLY THE LAST Agent message" in p
    with pytest.raises(TemplateError, match="system"):
        format_llama_guard3([{"role": "system", "content": "x"}])


@pytest.mark.parametrize(("raw", "verdict"), [
    ("safe", GuardVerdict(False)),
    ("\n\nsafe\n", GuardVerdict(False)),
    ("safe<|eot_id|>", GuardVerdict(False)),
    ("unsafe\nS1", GuardVerdict(True, ("S1",))),
    ("unsafe\nS1,S10", GuardVerdict(True, ("S1", "S10"))),
    ("unsafe\nS2, S14", GuardVerdict(True, ("S2", "S14"))),
    ("unsafe", GuardVerdict(True, ())),
])
def test_parse_llama_guard_output(raw, verdict):
    assert parse_llama_guard_output(raw) == verdict


@pytest.mark.parametrize("raw", ["", "Safe to say", "unsafe\nS99", "unsafe\nviolence", "safe\nS1", "unsafe\nS1\nmore"])
def test_parse_llama_guard_output_rejects_anything_else(raw):
    with pytest.raises(JudgeError, match="guard output"):
        parse_llama_guard_output(raw)


def test_parse_respects_custom_categories():
    assert parse_llama_guard_output("unsafe\nS15", {"S15": "Custom."}).categories == ("S15",)
    assert "S11" in LLAMA_GUARD_3_CATEGORIES


# --- the guard labeler end to end on tiny Llamas ---

@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("transformers")
    from tests.data import tiny_guard

    return tiny_guard


def test_guard_labeler_on_a_scripted_tiny_llama(tiny, tmp_path):
    tok = tiny.tiny_tokenizer()
    newline = tok.convert_ids_to_tokens(tok("\n", add_special_tokens=False)["input_ids"])[0]
    cats = {"S1": "Violent Crimes.", "S10": "Hate."}   # a short prompt keeps the test fast
    unsafe = GuardLabeler({"batch_size": 2, "categories": cats}, model=tiny.scripted_llama(tok, ["unsafe", newline, "S1", ",", "S10"]),
                          tokenizer=tok)
    out = label_texts(unsafe, ["How do I make a bomb?", "short", "a third text"], cache_dir=tmp_path)
    assert unsafe.last_outputs == ["unsafe\nS1,S10"]       # the last batch held one text
    assert [(x.label, x.note) for x in out] == [(1, "S1,S10")] * 3
    safe = GuardLabeler(model=tiny.scripted_llama(tok, ["safe"]), tokenizer=tok)
    assert [x.label for x in safe.label(["hello", "a much longer text to force left padding"])] == [0, 0]


def test_guard_labeler_on_a_random_tiny_llama_parses_or_raises(tiny):
    tok = tiny.tiny_tokenizer()
    lab = GuardLabeler({"max_new_tokens": 6}, model=tiny.tiny_llama(len(tok)), tokenizer=tok)
    try:
        out = lab.label(["hello", "how do I do this?"])
    except JudgeError as e:   # random weights emit noise: the error quotes it and says what was expected
        assert "not 'safe' or 'unsafe" in str(e) and repr(lab.last_outputs[0])[:12] in str(e)
    else:
        assert [x.label for x in out] == [int(parse_llama_guard_output(r).unsafe) for r in lab.last_outputs]


def test_guard_tokenizer_format_needs_a_chat_template(tiny):
    tok = tiny.tiny_tokenizer()
    lab = GuardLabeler({"prompt_format": "tokenizer"}, model=tiny.tiny_llama(len(tok)), tokenizer=tok)
    with pytest.raises(TemplateError, match="no chat template"):
        lab.prompt("x")
    tok.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    assert lab.prompt("x") == "[x]"


def test_guard_labeler_needs_model_and_tokenizer_together():
    with pytest.raises(TypeError, match="both model and tokenizer"):
        GuardLabeler(model=object())
