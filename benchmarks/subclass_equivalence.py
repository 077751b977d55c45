"""The move of the paper's options from patches on RecBole's SASRec/GRU4Rec/BERT4Rec into our subclasses
(PaperSASRec, PaperGRU4Rec, PaperBERT4Rec) changes no number: the same seed and options, trained 2 epochs on
ml-100k, give identical validation and test metrics, state-dict names and parameter sums before and after.

    # before the move (commit e505de9, RecBole's classes patched), from a worktree of that commit:
    python benchmarks/subclass_equivalence.py before.json sas=SASRec sas_sampled=SASRec gru=GRU4Rec bert=BERT4Rec llm2sas=LLM2SASRec
    # after it:
    python benchmarks/subclass_equivalence.py after.json sas=PaperSASRec sas_sampled=PaperSASRec gru=PaperGRU4Rec bert=PaperBERT4Rec llm2sas=LLM2SASRec
    python benchmarks/subclass_equivalence.py --compare before.json after.json
"""
import json, os, sys
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
torch.set_num_threads(1)
import recbole_llm  # noqa
from recbole_llm import pipeline

COMMON = dict(epochs=2, train_batch_size=256, eval_batch_size=512, hidden_size=32, inner_size=32, embedding_size=32,
              n_layers=1, n_heads=2, stopping_step=5, show_progress=False, save_dataset=False, checkpoint_dir="/tmp/equiv_saved",
              MAX_ITEM_LIST_LENGTH=20, seed=7)
CASES = {
    "sas": dict(output_dense="relu", output_bias=True, train_mode="all_positions", pack_sequences=True),
    "sas_sampled": dict(output_dense="relu", output_bias=True, train_mode="prefixes", softmax_negatives=50,
                        softmax_sampler="popularity"),
    "gru": dict(output_dense="relu", output_bias=True, train_mode="all_positions"),
    "bert": dict(bert_layers="paper", bert_padding="left_mask", bert_predict_mask="after_prompt",
                 train_mode="all_positions", bert_mask_last_copies=1, bert_random_mask_copies=2, pack_sequences=True,
                 mask_ratio=0.2),
    "llm2sas": dict(output_dense="relu", output_bias=True, train_mode="all_positions", softmax_negatives=40),
}
if sys.argv[1] == "--compare":
    a, b = (json.load(open(path)) for path in sys.argv[2:4])
    same = {case: a[case] == b[case] for case in a}
    print(json.dumps(same))
    sys.exit(0 if all(same.values()) and set(a) == set(b) else 1)
out = {}
for spec in sys.argv[2:]:
    name, model = spec.split("=")
    run = pipeline.build(model, "ml-100k", None, {**COMMON, **CASES[name], "data_path": "dataset"})
    result = run.trainer.fit(run.train_data, run.valid_data, saved=True, show_progress=False)
    test = run.trainer.evaluate(run.test_data, load_best_model=True, show_progress=False)
    sd = run.model.state_dict()
    out[name] = {"valid": result[0], "test": {k: float(v) for k, v in test.items()},
                 "keys": sorted(sd), "param_sum": float(sum(v.double().sum() for v in sd.values() if v.is_floating_point()))}
    print(name, model, out[name]["valid"], out[name]["test"].get("ndcg@20"), flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
