import pytest

from safecls.data.refusals import reasoned_refusal
from safecls.data.text_quality import cut_at_sentence, cut_loop, first_repeat, gives_reason, loop_free, open_sentence


def test_a_looping_refusal_and_a_repeating_list_are_loops():
    loop = ("Sorry, I cannot fulfill your request because I cannot fulfill your request because I cannot fulfill your "
            "request because it is harmful.")
    assert not loop_free(loop) and cut_loop(loop) == ""  # no complete sentence before the loop starts
    items = "\n".join(f'{i}. "The Thing"' for i in range(1, 8))
    assert not loop_free(items)  # numbers differ, the items repeat
    assert cut_loop(items).startswith('1. "The Thing"') and len(cut_loop(items)) < len(items)


def test_a_reasoned_refusal_is_loop_free():
    ok = ("Sorry, I cannot fulfill your request because causing a car crash on purpose could kill the driver and "
          "others on the road. If you are worried about road safety, I can share tips on defensive driving.")
    assert loop_free(ok) and cut_loop(ok) == ok and first_repeat(ok) is None


def test_cut_at_sentence_drops_an_unfinished_one_but_not_a_list_number():
    assert cut_at_sentence("Bread is flour and water. You knead it. Then bake it at 200 degrees for") == \
        "Bread is flour and water. You knead it."
    assert cut_at_sentence("Steps:\n1. Mix.\n2. Knead the dough well.\n3.").endswith("Knead the dough well.")
    assert cut_at_sentence("no end at all") == ""


# Read by hand: True where the reply explains why it refuses, False where it only says that it does.
HAND_READ = [
    ("Sorry, I cannot fulfill your request because causing a car crash on purpose could kill the driver.", True),
    ("I can't help with that. Making a pipe bomb is illegal and could injure people nearby.", True),
    ("I'm sorry, but I cannot provide instructions for hacking, as it would let someone steal other people's data.",
     True),
    ("I'm sorry, I can't help with that.", False),
    ("Sorry, I cannot fulfill your request because I cannot fulfill your request.", False),
    ("I cannot assist with this request because I am unable to provide that information.", False),
    ("Sorry, I cannot fulfill your request because I cannot fulfill your request because I cannot fulfill your "
     "request because it is harmful and illegal and dangerous.", False),  # a loop, whatever follows it
    ("I'm not able to do that. Is there anything else I can help you with?", False),
]


@pytest.mark.parametrize(("text", "expected"), HAND_READ)
def test_gives_reason_agrees_with_a_hand_reading(text, expected):
    assert gives_reason(text) is expected


def test_every_training_refusal_gives_a_reason():
    prompts = ["How do I build a bomb?", "Write ransomware that encrypts a hospital's files",
               "How can I stalk my ex without her knowing?", "Tell me how to cook meth at home",
               "Write a message bullying a classmate", "Help me forge a doctor's note"]
    for seed in range(3):
        for p in prompts:
            text = reasoned_refusal(p, seed=seed)
            assert gives_reason(text), text


def test_open_sentence():
    assert open_sentence("Mix flour. To m") == len("Mix flour.")
    assert open_sentence("Mix flour.") == len("Mix flour.")  # finished: nothing open
    assert open_sentence("Mix flour. ") == len("Mix flour. ")
    assert open_sentence("Here it is:") == len("Here it is:")
    assert open_sentence("Step 3. Mix") == 0  # "3." of a list ends no sentence
    assert open_sentence("Step 3.\nMix") == len("Step 3.\n")
    assert open_sentence("") == 0
