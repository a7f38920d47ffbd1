from safecls.data.text_quality import cut_at_sentence, cut_loop, first_repeat, loop_free


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
