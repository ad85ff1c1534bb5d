"""Binding without the eyes: can a tiny Llama learn "what colour is the shape in row r, column c"
from PERFECT per-cell features (one-hot empty/colour/shape + row/column codes, through a linear
layer, as 16 image tokens), and how does the order of question and image change that?

    python benchmarks/lm_binding.py query_colour 5e-4 4 400 2            # image first: ~51% at step 400
    python benchmarks/lm_binding.py query_colour 5e-4 4 400 2 qfirst     # question first: 100% at step 400

    # three families at once (count by colour, exists, query colour), 600 steps, one thread:
    python benchmarks/lm_binding.py count_colour,exists,query_colour 5e-4 4 600 1 qfirst   # 66.5%
    python benchmarks/lm_binding.py count_colour,exists,query_colour 5e-4 4 600 1 qboth    # 87.5%

    # width: the same three hard families, 400 steps; 256 wide (the shipped LM) vs 512 wide
    python benchmarks/lm_binding.py count_colour,count_shape,exists 5e-4 4 400 2 qfirst 4 256   # 53.5%
    python benchmarks/lm_binding.py count_colour,count_shape,exists 5e-4 4 400 2 qfirst 8 512   # 76.5%

    # the embedded model's own image tokens instead of the oracle (frozen tower + projector, a fresh
    # linear on top, as the oracle has), the same three families, 1,200 steps:
    python benchmarks/lm_binding.py count_colour,count_shape,exists 5e-4 4 1200 2 qfirst 4 256        # oracle 99.0%
    python benchmarks/lm_binding.py count_colour,count_shape,exists 5e-4 4 1200 2 qfirst,real 4 256   # real 50.5%
    python benchmarks/lm_binding.py count_colour,count_shape,exists 5e-4 4 1200 2 qfirst,mix 4 256    # 62.0%
    python benchmarks/lm_binding.py count_colour,count_shape,exists 5e-4 4 1200 2 qfirst,real,probe 4 256  # 96.0%

Arguments: families (comma-separated) lr layers steps threads [mode, comma-separated: qfirst, qboth
(the question before and again after the image), cellcode (one code per cell instead of row +
column), nopos (no position code at all); real (the image tokens of the model in $LM_BINDING_MODEL,
default the embedded one, instead of the oracle), with std (each feature standardised over 300
images), unit (each token scaled to norm 1), pos (the oracle's row + column code appended), probe
(each token replaced by the class probabilities of a linear per-cell colour / shape classifier
fitted on 2,000 images); mix (the oracle through a fixed random 256-wide map: the same information,
dense; with small, scaled to norm ~1.7); hidden (with real: the projector's hidden layer, what
its trainable second layer reads), with units (only its word units, `vrm train vision word_units=true`)
and sigmoid (a sigmoid in place of its GELU)] [heads,
default 4] [hidden size, default 256; the MLP is 3x wider].
Prints held-out answer-token accuracy (200 questions) every 100 steps.
"""
import os, sys, random, time, torch, torch.nn as nn
from transformers import LlamaConfig, LlamaForCausalLM
from vrm.model import load_model
from vrm.tasks.shapes import ShapesTask, SHAPES, COLOURS
from vrm.train.vision import image_features
random.seed(0); torch.manual_seed(0); torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 1)
MODE = set(sys.argv[6].split(",")) if len(sys.argv) > 6 else set()  # whole words: "units" is not "unit"
HEADS = int(sys.argv[7]) if len(sys.argv) > 7 else 4
HIDDEN = int(sys.argv[8]) if len(sys.argv) > 8 else 256
fams = sys.argv[1].split(","); lr = float(sys.argv[2]); layers = int(sys.argv[3]); steps = int(sys.argv[4])
vlm, proc = load_model(os.environ.get("LM_BINDING_MODEL")); tok = proc.tokenizer; vlm.eval()
task = ShapesTask(families=tuple(fams))
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=3 * HIDDEN, num_hidden_layers=layers,
                  num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=256, tie_word_embeddings=True)
lm = LlamaForCausalLM(cfg)
C, S = list(COLOURS), list(SHAPES)
feat_dim = 1 + len(C) + len(S) + (16 if "cellcode" in MODE else 8)
if "real" in MODE:  # the embedded model's own image tokens (frozen tower + projector) instead of the oracle
    feat_dim = (1 + len(C) + 1 + len(S) if "probe" in MODE else len(vlm.config.word_units) if "units" in MODE
                else vlm.config.text_config.hidden_size) + (8 if "pos" in MODE else 0)
MIX = torch.randn(feat_dim, 256, generator=torch.Generator().manual_seed(1)) / (16 if "small" in MODE else 1) if "mix" in MODE else None
proj = nn.Linear(256 if "mix" in MODE else feat_dim, HIDDEN)
STATS = None  # (mean, std) of each image-token feature, for mode std
ROWCOL = torch.zeros(16, 8)  # token k's row and column, one-hot (mode pos)
for _k in range(16):
    ROWCOL[_k, _k // 4] = ROWCOL[_k, 4 + _k % 4] = 1
def seen(image):
    """The real model's 16 image tokens, transformed as MODE says."""
    f = image_tokens(image)
    f = (f - STATS[0]) / STATS[1] if "std" in MODE else f
    f = f / f.norm(dim=-1, keepdim=True) if "unit" in MODE else f
    f = torch.cat([PROBE[0](f).softmax(-1), PROBE[1](f).softmax(-1)], 1).detach() if "probe" in MODE else f
    return torch.cat([f, ROWCOL], 1) if "pos" in MODE else f
def image_tokens(image):
    with torch.no_grad():
        px = proc.image_processor([image], return_tensors="pt")["pixel_values"]
        if "hidden" in MODE:  # the projector's hidden layer (what its trainable second layer reads)
            _, h = image_features(vlm, px, with_hidden=True)  # before the activation
            h = (torch.sigmoid(h) if "sigmoid" in MODE else vlm.model.multi_modal_projector.act(h)).reshape(16, -1)
            return h[:, :len(vlm.config.word_units)] if "units" in MODE else h  # units: only the word detectors
        out = vlm.model.get_image_features(pixel_values=px)
        out = out if torch.is_tensor(out) else out.pooler_output
        return (torch.cat(list(out)) if isinstance(out, (list, tuple)) else out).reshape(16, -1)
def mixed(f):
    """Mode mix: the oracle through a fixed random 256-wide linear map: the same information, dense."""
    return f @ MIX if MIX is not None else f
def oracle(objs):
    f = torch.zeros(16, feat_dim)
    for k in range(16):
        r, c = divmod(k, 4); f[k, 0] = 1
        if "nopos" in MODE: continue
        if "cellcode" in MODE: f[k, -16 + k] = 1
        else: f[k, -8 + r] = 1; f[k, -4 + c] = 1
    for o in objs:
        k = (o["row"] - 1) * 4 + o["col"] - 1
        f[k, 0] = 0; f[k, 1 + C.index(o["colour"])] = 1; f[k, 1 + len(C) + S.index(o["shape"])] = 1
    return f
def batch(seeds):
    embs, labels = [], []
    for sd in seeds:
        s = task.sample(sd)
        q = tok(s.question + " Answer:", add_special_tokens=False).input_ids
        a = tok(" " + s.answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
        ids = torch.tensor(q + a)
        img, txt = proj(seen(s.image) if "real" in MODE else mixed(oracle(s.trace["objects"]))), lm.get_input_embeddings()(ids)
        if "qboth" in MODE:  # the question, the image, the question again
            e = torch.cat([txt[:len(q)], img, txt])
        elif "qfirst" in MODE:
            e = torch.cat([txt[:len(q)], img, txt[len(q):]])
        else:
            e = torch.cat([img, txt])
        lab = torch.tensor([-100] * (16 + len(q) * (2 if "qboth" in MODE else 1)) + a)
        embs.append(e); labels.append(lab)
    T = max(len(e) for e in embs)
    E = torch.zeros(len(embs), T, HIDDEN); L = torch.full((len(embs), T), -100); M = torch.zeros(len(embs), T, dtype=torch.long)
    for i, (e, l) in enumerate(zip(embs, labels)):
        E[i, :len(e)] = e; L[i, :len(l)] = l; M[i, :len(e)] = 1
    return E, L, M
if "real" in MODE and "std" in MODE:  # standardise each feature over 300 training images
    _tokens = torch.cat([image_tokens(task.sample(i).image) for i in range(300)])
    STATS = (_tokens.mean(0), _tokens.std(0) + 1e-5)
PROBE = None
if "real" in MODE and "probe" in MODE:  # a linear classifier per cell (colour, shape; 0 = empty), fitted on 2,000 images
    _X = torch.stack([image_tokens(task.sample(i).image) for i in range(2000)])
    _cells = [{(o["row"] - 1) * 4 + o["col"] - 1: o for o in task.sample(i).trace["objects"]} for i in range(2000)]
    _y = [torch.tensor([[1 + names.index(c[k][attr]) if k in c else 0 for k in range(16)] for c in _cells])
          for attr, names in (("colour", C), ("shape", S))]
    PROBE = (nn.Linear(_X.shape[-1], 1 + len(C)), nn.Linear(_X.shape[-1], 1 + len(S)))
    for head, y in zip(PROBE, _y):
        _opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        for _ in range(300):
            _loss = nn.functional.cross_entropy(head(_X).reshape(-1, head.out_features), y.reshape(-1))
            _opt.zero_grad(); _loss.backward(); _opt.step()
opt = torch.optim.AdamW(list(lm.parameters()) + list(proj.parameters()), lr=lr, betas=(0.9, 0.98))
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / 50))
t0 = time.time()
for step in range(1, steps + 1):
    E, L, M = batch([random.randrange(9_000_000) for _ in range(32)])
    loss = lm(inputs_embeds=E, attention_mask=M, labels=L).loss
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0); opt.step(); sched.step()
    if step % 100 == 0:
        # eval: answer-token accuracy (first answer token argmax == gold first token) on 200 held-out
        with torch.no_grad():
            E, L, M = batch(range(9_000_000, 9_000_200))
            logits = lm(inputs_embeds=E, attention_mask=M).logits
            first = (L != -100).float().argmax(1)
            pred = logits[torch.arange(len(L)), first - 1].argmax(-1); gold = L[torch.arange(len(L)), first]
            print(f"step {step} loss {loss.item():.3f} acc {(pred == gold).float().mean():.3f} {time.time()-t0:.0f}s", flush=True)
