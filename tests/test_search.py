"""Search at inference time: the shared-cache engine gives the tokens of from-scratch generation,
stage beam stops at closing tags and chains stages, and every scorer does what it says.

The embedded model never learned the stages format, so these tests check mechanics, not accuracy.
"""

import sys

import pytest
import torch

from vrm import VrmError
from vrm.eval.run import evaluate
from vrm.formats import get_format
from vrm.formats.structured import STAGES, StagesFormat
from vrm.infer.decode import Candidate, Stats, branch, decode, prefill, single_token
from vrm.infer.generate import generate_completions, prompt_text, stop_ids
from vrm.infer.lookahead import LookaheadScorer
from vrm.infer.scorers import (Choice, ConsensusScorer, JudgeScorer, LikelihoodScorer, Query, RewardScorer, VerifierScorer,
                               get_scorer, judge_prompt, knockout, token_f1)
from vrm.infer.search import StageBeam, get_strategy, run_search
from vrm.tasks import eval_samples, get_task


@pytest.fixture(scope="module")
def clevr():
    task = get_task("clevr")
    return task, list(eval_samples(task, n=4))


def queries(clevr, fmt="stages"):
    task, samples = clevr
    return [Query(s.image, get_format(fmt).prompt(s), s, task) for s in samples]


def test_greedy_search_equals_hf_generate(loaded, clevr):
    model, processor = loaded
    qs = queries(clevr, "direct")
    ref = generate_completions(model, processor, [q.image for q in qs], [q.prompt for q in qs], max_new_tokens=40)
    assert run_search(model, processor, qs, "greedy", format="direct", max_new_tokens=40).completions == [c.text for c in ref]


def test_candidates_from_a_shared_cache_equal_separate_generation(loaded, clevr):
    """N sampled candidates from one forked prefix, in one batch, are the candidates each seed gives
    alone from a freshly encoded prefix (same tokens, same log-probs)."""
    model, processor = loaded
    qs, n, seeds = queries(clevr)[:2], 2, [11, 13, 21, 23]
    prefix = prefill(model, processor, [q.image for q in qs], [q.prompt for q in qs], ["<SUMMARY>"] * 2)
    stats = Stats()
    batched = decode(model, processor, prefix.expand(n), 24, [single_token(processor, "</SUMMARY>")], 1.0, seeds, stats)
    assert stats.images == 0 and stats.tokens == sum(len(c.logprobs) for c in batched)
    assert any(len(c.ids) > 5 for c in batched)  # something long enough to compare
    for row, seed in enumerate(seeds):
        q = qs[row // n]
        alone = decode(model, processor, prefill(model, processor, [q.image], [q.prompt], ["<SUMMARY>"]), 24,
                       [single_token(processor, "</SUMMARY>")], 1.0, [seed])[0]
        assert (alone.ids, alone.stop) == (batched[row].ids, batched[row].stop)
        assert alone.logprobs == pytest.approx(batched[row].logprobs, abs=1e-4)


class PickFirst:
    name = "first"

    def pick(self, model, processor, choices, stats):
        return [0] * len(choices)


def test_greedy_first_candidate_is_the_greedy_completion(loaded, clevr):
    """With ``+greedy`` the first candidate of every step is what greedy decoding writes, so a search
    that always keeps it answers exactly as greedy does; the other candidates are still sampled."""
    model, processor = loaded
    qs = queries(clevr, "direct")
    greedy = run_search(model, processor, qs, "greedy", format="direct", max_new_tokens=24).completions
    for spec in ("best_of:3+greedy", "sentence_beam:2+greedy"):
        strategy = get_strategy(spec)
        assert strategy.greedy_first and strategy.n == int(spec.split(":")[1][0])
        assert run_search(model, processor, qs, strategy, PickFirst(), "direct", 24).completions == greedy
    prefix = prefill(model, processor, [q.image for q in qs[:1]], [q.prompt for q in qs[:1]])
    rows = decode(model, processor, prefix.expand(3), 24, (), 5.0, [None, 1, 2])
    assert rows[0].text.strip() == greedy[0] and rows[1].ids != rows[2].ids


def test_the_temperature_sets_how_far_sampled_candidates_stray(loaded, clevr):
    """Candidates sampled near temperature 0 are the greedy completion; at 5 they differ from it."""
    model, processor = loaded
    qs = queries(clevr, "direct")
    greedy = run_search(model, processor, qs, "greedy", format="direct", max_new_tokens=24).completions
    cold, hot = (run_search(model, processor, qs, get_strategy("best_of:2", temperature=t), PickFirst(), "direct",
                            24).completions for t in (1e-4, 5.0))
    assert cold == greedy and hot != greedy
    assert get_strategy("stage_beam:4+greedy", temperature=0.3).temperature == 0.3


def test_branch_by_hand():
    """Rows of one group written alike take no token an earlier twin took at this step, where the
    model gives the other tokens at least the mass; where it is sure they stay twins."""
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3 + [[0.95, 0.03, 0.01, 0.01]] * 2 + [[0.5, 0.3, 0.15, 0.05]])
    logprobs = probs.log()
    scores = torch.tensor([[9.0, 1.0, 2.0, 3.0]] * 6)  # every row would take token 0; then 3, then 2
    twins = [0, 0, 0, 1, 1, 2]  # rows 0-2 one group, 3-4 another, 5 alone
    sampled = [False, True, True, True, True, True]  # row 0 is the greedy one
    tokens = branch(scores, logprobs, scores.argmax(-1), range(6), twins, sampled, mass=0.1)
    # row 1: others hold 0.5 >= 0.1, so its best token but 0 (3); row 2: after 0 and 3, 0.45 left: 2.
    # rows 3-4: others hold 0.05 < 0.1: both keep 0 and stay twins; row 5 has no twin: keeps 0.
    assert tokens.tolist() == [0, 3, 2, 0, 0, 0]
    assert len({twins[0], twins[1], twins[2], twins[3], twins[5]}) == 5 and twins[3] == twins[4]


def test_distinct_candidates_branch_where_the_model_hesitates(loaded, clevr):
    """With ``distinct`` every sampled candidate leaves the earlier ones of its question at the first
    token where the rest of the probability reaches the mass; near temperature 0 without it all four
    are the greedy text."""
    model, processor = loaded
    qs = queries(clevr, "direct")[:2]
    seeds = [None, 1, 2, 3] * 2

    def rows(**kw):
        prefix = prefill(model, processor, [q.image for q in qs], [q.prompt for q in qs])
        return decode(model, processor, prefix.expand(4), 12, (), 1e-4, seeds, **kw)

    plain, apart = rows(), rows(distinct=1e-9, group=4)
    for q in range(2):
        assert len({tuple(c.ids) for c in plain[4 * q:4 * q + 4]}) == 1
        assert plain[4 * q].ids == apart[4 * q].ids  # the greedy row is untouched
        assert len({c.ids[0] for c in apart[4 * q:4 * q + 4]}) == 4  # any other token holds more than 1e-9
    cold = {spec: run_search(model, processor, qs, get_strategy(spec, temperature=1e-4, distinct=1e-9), PickFirst(),
                             "direct", 12).stats.repeats for spec in ("best_of:4+greedy", "best_of:4+greedy+distinct")}
    assert cold == {"best_of:4+greedy": 2 * 3, "best_of:4+greedy+distinct": 0}  # 3 repeats of greedy per question
    strategy = get_strategy("stage_beam:4+greedy+distinct", distinct=0.2)
    assert (strategy.greedy_first, strategy.distinct) == (True, 0.2)
    assert get_strategy("stage_beam:4+greedy").distinct == 0.0


class Recorder:
    """A stub scorer that picks the last candidate and remembers every choice it saw."""

    name = "recorder"

    def __init__(self, on_pick=lambda step: None):
        self.seen, self.on_pick = [], on_pick

    def pick(self, model, processor, choices, stats):
        self.on_pick(len(self.seen))
        self.seen.append(choices)
        return [len(c.candidates) - 1 for c in choices]


@pytest.fixture
def closing_tags_after_even_tokens(loaded):
    """Make the model write the current stage's closing tag right after any even token id, so
    candidates of mixed lengths stop at their tag (the embedded model never learned the tags).
    Yields a one-item list holding the index of the current stage."""
    model, processor = loaded
    stage, last = [0], {}
    closes = [single_token(processor, f"</{st}>") for st in STAGES]

    def remember(module, args, kwargs):
        last["ids"] = kwargs["input_ids"][:, -1]

    def bias(module, args, logits):
        even = (last["ids"] % 2 == 0).nonzero()[:, 0]
        logits[even, -1, closes[stage[0]]] += 1000.0
        return logits

    hooks = [model.register_forward_pre_hook(remember, with_kwargs=True), model.lm_head.register_forward_hook(bias)]
    yield stage
    for h in hooks:
        h.remove()


def test_stage_beam_stops_at_closing_tags_and_chains_stages(loaded, clevr, closing_tags_after_even_tokens):
    """Each stage's candidates stop at its closing tag; the winner (plus the forced tags) is the
    prefix of the next stage: the next candidates equal HF generate from the whole sequence."""
    model, processor = loaded
    stage = closing_tags_after_even_tokens
    qs, rec = queries(clevr)[:2], Recorder(on_pick=lambda k: stage.__setitem__(0, min(k + 1, 3)))
    out = run_search(model, processor, qs, StageBeam(2, temperature=0.0, stage_tokens=12), rec, "stages", 80)
    assert [choices[0].kind for choices in rec.seen] == list(STAGES)
    assert any(c.candidates[-1].ids and c.candidates[-1].stop == single_token(processor, f"</{c.kind}>")
               for choices in rec.seen for c in choices)  # some stage stopped at its tag after writing something
    eos = set(stop_ids(model, processor))
    for b, completion in enumerate(out.completions):
        assert list(StagesFormat().parse(completion).stages) == list(STAGES)
        expected = "".join(f"<{st}>{choices[b].candidates[-1].text}</{st}>" for st, choices in zip(STAGES, rec.seen))
        assert completion == expected.strip()
        # the same stages from scratch: one HF generate per stage on the full token sequence
        ids = processor(images=[qs[b].image], text=[prompt_text(processor, qs[b].prompt) + "<SUMMARY>"], return_tensors="pt")
        seq = ids["input_ids"]
        for k, (st, choices) in enumerate(zip(STAGES, rec.seen)):
            stage[0] = k
            close = single_token(processor, f"</{st}>")
            cand = choices[b].candidates[-1]
            assert close not in cand.ids and cand.stop in {close, None, *eos}
            gen = model.generate(input_ids=seq, attention_mask=torch.ones_like(seq), pixel_values=ids["pixel_values"],
                                 max_new_tokens=12, do_sample=False, eos_token_id=[close, *eos], pad_token_id=0)
            assert gen[0, seq.shape[1]:].tolist() == cand.ids + ([cand.stop] if cand.stop is not None else [])
            forced = processor.tokenizer.encode(f"</{st}>" + (f"<{STAGES[k + 1]}>" if k < 3 else ""), add_special_tokens=False)
            seq = torch.cat([seq, torch.tensor([cand.ids + forced])], dim=1)


def test_knockout_by_hand():
    strength = {0: [0.1, 0.9, 0.5, 0.3, 0.7], 1: [0.2, 0.1, 0.4], 2: [1.0]}
    calls = []

    def prefer(pairs):
        calls.append(pairs)
        return [float(strength[c][i] > strength[c][j]) for c, i, j in pairs]

    assert knockout([5, 3, 1], prefer) == [1, 2, 0]
    # round 1: (0,1) (2,3) | (0,1); round 2: (1,2) + 4 waits | (0,2); round 3: (1,4)
    assert calls == [[(0, 0, 1), (0, 2, 3), (1, 0, 1)], [(0, 1, 2), (1, 0, 2)], [(0, 1, 4)]]
    assert sum(map(len, calls)) == (5 - 1) + (3 - 1)
    # a non-transitive preference: the bracket decides (0 beats 1, 2 beats 3, then 2 beats 0)
    beats = {(0, 1): 1.0, (2, 3): 0.9, (0, 2): 0.2}
    assert knockout([4], lambda pairs: [beats[(i, j)] for _, i, j in pairs]) == [2]


def test_judge_reads_1_vs_2_from_a_shared_head(loaded, clevr):
    """The cached-head judge gives the probability of a full judging prompt run from scratch."""
    model, processor = loaded
    q = queries(clevr)[0]
    cands = [Candidate([], [], None, t) for t in ("a red cube", "two spheres", "nothing")]
    choice = Choice(q, "CAPTION", "<SUMMARY>count them</SUMMARY><CAPTION>", cands, "</CAPTION>", "stages")
    stats = Stats()
    got = JudgeScorer().preferences(model, processor, [choice], stats)([(0, 0, 1), (0, 2, 1)])
    one, two = single_token(processor, "1"), single_token(processor, "2")
    for p, (i, j) in zip(got, [(0, 1), (2, 1)]):
        inputs = processor(images=[q.image], text=[prompt_text(processor, judge_prompt(choice, i, j))], return_tensors="pt")
        logits = model(**inputs).logits[0, -1]
        assert p == pytest.approx(torch.sigmoid(logits[one] - logits[two]).item(), abs=1e-4)
    rendered = prompt_text(processor, "QUESTION")
    image_first = rendered.index(processor.image_token) < rendered.index("QUESTION")
    # image before the text: one shared head holds it; image after the text: each prompt encodes it
    assert stats.images == (1 if image_first else 2) and stats.comparisons == 2
    assert JudgeScorer().pick(model, processor, [choice], Stats())[0] in (0, 1, 2)


def test_likelihood_is_the_mean_log_prob(loaded, clevr):
    model, processor = loaded
    q = queries(clevr, "direct")[1]
    cand = decode(model, processor, prefill(model, processor, [q.image], [q.prompt]), 20, (), 1.0, [7])[0]
    inputs = processor(images=[q.image], text=[prompt_text(processor, q.prompt)], return_tensors="pt")
    tail = cand.ids + ([cand.stop] if cand.stop is not None else [])
    ids = torch.cat([inputs["input_ids"], torch.tensor([tail])], dim=1)
    logp = torch.log_softmax(model(input_ids=ids, pixel_values=inputs["pixel_values"]).logits[0].float(), -1)
    start = inputs["input_ids"].shape[1]
    by_hand = sum(logp[start - 1 + k, t].item() for k, t in enumerate(tail)) / len(tail)
    assert LikelihoodScorer().score(Choice(q, "answer", "", [cand]), 0) == pytest.approx(by_hand, abs=1e-4)


def length_reward(sample, completion):
    return float(len(completion))


def test_reward_scorers_resolve(tmp_path, monkeypatch):
    module = type(sys)("tests_search_reward")
    module.length_reward = length_reward
    monkeypatch.setitem(sys.modules, "tests_search_reward", module)
    assert get_scorer(length_reward).fn is length_reward
    assert get_scorer("reward:tests_search_reward:length_reward").fn(None, "abc") == 3.0
    (tmp_path / "my_reward.py").write_text("def r(sample, completion):\n    return -len(completion)\n")
    assert get_scorer(f"reward:{tmp_path / 'my_reward.py'}:r").fn(None, "ab") == -2
    choice = Choice(Query(None, "q"), "answer", "", [Candidate([], [], None, t) for t in ("a", "abc", "ab")])
    assert RewardScorer(length_reward).pick(None, None, [choice], Stats()) == [1]


@pytest.mark.parametrize("make, message", [
    (lambda: get_strategy("beam:4"), "unknown search strategy 'beam:4'; known strategies: greedy"),
    (lambda: get_strategy("stage_beam"), "give the number of candidates, e.g. stage_beam:4"),
    (lambda: get_strategy("sample:hot"), "temperature must be a number > 0"),
    (lambda: get_strategy("stage_beam:4", temperature=0), "temperature 0: it must be a number > 0"),
    (lambda: get_strategy("stage_beam:4+best"), "the first candidate greedy, the rest sampled"),
    (lambda: get_strategy("stage_beam:4+distinct", distinct=1.5), "distinct 1.5: the probability at which"),
    (lambda: get_scorer("oracle"), "unknown scorer 'oracle'; known scorers: judge, likelihood"),
    (lambda: get_scorer("reward"), "needs a function: reward:pkg.module:function"),
    (lambda: get_scorer("lookahead"), "needs a scorer to score the completed answers: lookahead:<scorer>"),
    (lambda: get_scorer("lookahead:judge"), "lookahead needs a scorer that scores each candidate"),
    (lambda: get_scorer("reward:no_such_module_xyz:f"), "cannot import no_such_module_xyz"),
    (lambda: get_scorer("reward:math:no_such_fn"), "math has no function 'no_such_fn'"),
    (lambda: run_search(None, None, [], "stage_beam:2", format="direct"), "use format 'stages'"),
])
def test_unknown_names_raise_clear_errors(make, message):
    with pytest.raises(VrmError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_lookahead_scores_each_candidate_completed_greedily(loaded, clevr):
    """An unfinished stage's candidates are each continued greedily to the end of the answer and the
    inner reward scores those whole answers; a conclusion's candidates are scored as they are."""
    model, processor = loaded
    q = queries(clevr)[0]
    seen = []

    def reward(sample, completion):  # prefers the whole answer with the most objects named
        seen.append(completion)
        return completion.count(" at x ") - len(completion) / 1e6

    texts = ["1 object: a small red metal cube at x 5 y 5.", "2 objects: a small red metal cube at x 5 y 5; "
             "a large blue rubber sphere at x 40 y 40."]
    head = "<SUMMARY>I count the objects.</SUMMARY><CAPTION>"
    caption = Choice(q, "CAPTION", head, [Candidate([], [], None, t) for t in texts], "</CAPTION>", "stages")
    stats = Stats()
    assert get_scorer("lookahead:likelihood").name == "lookahead:likelihood"
    scorer = LookaheadScorer(RewardScorer(reward), max_new_tokens=40)
    pick = scorer.pick(model, processor, [caption], stats)
    by_hand = []
    used = max(len(processor.tokenizer.encode(caption.completion(j), add_special_tokens=False)) for j in range(2))
    for i in range(2):  # the greedy continuation of the answer with candidate i in it, from a fresh prefix
        prefix = prefill(model, processor, [q.image], [q.prompt], [caption.completion(i)])
        by_hand.append(caption.completion(i) + decode(model, processor, prefix, 40 - used)[0].text)
    assert seen == by_hand and all(len(w) > len(caption.completion(i)) for i, w in enumerate(seen))
    assert pick == [max(range(2), key=lambda i: reward(None, by_hand[i]))] and stats.images == 2
    seen.clear()
    final = Choice(q, "CONCLUSION", head + "x</CAPTION><CONCLUSION>", [Candidate([], [], None, t) for t in ("1", "2")],
                   "</CONCLUSION>", "stages")
    stats = Stats()
    scorer.pick(model, processor, [final], stats)
    assert seen == [final.completion(0), final.completion(1)] and stats.images == 0 and stats.tokens == 0


def test_verifier_prefers_the_true_stage(clevr):
    task, samples = clevr
    s = samples[0]
    q = Query(s.image, StagesFormat().prompt(s), s, task)
    truth = StagesFormat().stage_target(s, task, "CAPTION")
    texts = ["a small thing somewhere", truth, "", " ".join(truth.split()[:4])]
    choice = Choice(q, "CAPTION", "<SUMMARY>x</SUMMARY><CAPTION>", [Candidate([], [], None, t) for t in texts], "</CAPTION>")
    v = VerifierScorer()
    assert v.score(choice, 1) == 1.0 and v.pick(None, None, [choice], Stats()) == [1]
    wrong = str(int(s.answer) + 1) if s.answer.isdigit() else "no such answer"
    final = Choice(q, "CONCLUSION", "<SUMMARY>x</SUMMARY><CONCLUSION>", [Candidate([], [], None, t) for t in (wrong, s.answer)],
                   "</CONCLUSION>")
    assert [v.score(final, i) for i in (0, 1)] == [0.0, 1.0]
    with pytest.raises(VrmError, match="needs samples with their ground truth"):
        v.score(Choice(Query(s.image, "q"), "CAPTION", "", [Candidate([], [], None, "x")]), 0)


def test_consensus_picks_the_majority_answer_and_the_medoid_stage():
    cand = lambda texts: [Candidate([], [], None, t) for t in texts]  # noqa: E731
    q = Query(None, "How many?")
    # Whole answers: two of four say 3 (one as a word), one says 2, one cannot be read: a 3 wins.
    votes = Choice(q, "answer", "", cand(["<think>a</think><answer>2</answer>", "<think>b</think><answer>three</answer>",
                                          "no tags", "<think>b</think><answer>3</answer>"]), format="think")
    # By hand: candidates 1 and 3 agree with each other and have the same word overlaps with the rest (4 of 6
    # words with candidate 0, none with "no tags"), so they tie and the first of them wins.
    assert ConsensusScorer().pick(None, None, [votes], Stats()) == [1]
    # A stage: word-overlap F1 with the others; "a red cube, a blue ball" shares most with both others.
    texts = ["a red cube", "a red cube, a blue ball", "a blue ball"]
    stage = Choice(q, "CAPTION", "<SUMMARY>x</SUMMARY><CAPTION>", cand(texts), "</CAPTION>")
    f1 = {(i, j): token_f1(texts[i], texts[j]) for i in range(3) for j in range(3)}
    assert f1[(1, 0)] + f1[(1, 2)] > max(f1[(0, 1)] + f1[(0, 2)], f1[(2, 0)] + f1[(2, 1)])
    assert ConsensusScorer().pick(None, None, [stage], Stats()) == [1]
    # A conclusion: the prefix's stages are kept, only the answer inside counts.
    final = Choice(q, "CONCLUSION", "<SUMMARY>x</SUMMARY><CONCLUSION>", cand(["yes", "no", "no"]), "</CONCLUSION>", "stages")
    assert ConsensusScorer().pick(None, None, [final], Stats()) == [1] and get_scorer("consensus").name == "consensus"


def test_every_strategy_and_scorer_runs_in_eval(loaded, clevr):
    model, processor = loaded
    task, samples = clevr
    pairs = [(task, s) for s in samples[:2]]
    for search, scorer in [("best_of:2", "judge"), ("sentence_beam:2", "likelihood"), ("stage_beam:2", "verifier"),
                           ("stage_beam:2", "consensus"), ("stage_beam:2+greedy+distinct", "likelihood")]:
        summary, records = evaluate(model, processor, pairs, "stages", max_new_tokens=16, progress=False,
                                    search=search, scorer=scorer)
        assert summary["n"] == 2 and all(isinstance(r["output"], str) for r in records)
        if search.startswith("stage_beam"):
            assert all(list(r["stages"]) == list(STAGES) for r in records)
