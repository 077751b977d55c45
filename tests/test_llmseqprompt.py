"""LLMSeqPrompt: prompt construction, answer ranking, hallucination mapping, providers."""
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import build as build_untuned
from loopback import Loopback, OpenAIFineTuning

from recbole_llm.llm.openai_ft import FineTuningFailed
from recbole_llm.prompts import PromptBuilder, TitleMapper, parse_titles


def build(model, tiny, **overrides):
    """The model built on the tiny data, then fine-tuned as its trainer does before fitting."""
    config, dataset, splits, built = build_untuned(model, tiny, **overrides)
    built.fine_tune(splits[0]._dataset)
    return config, dataset, splits, built

TITLES = ["", "Red Lipstick", "Pink Lipstick", "Dry Hair Shampoo", "Mint Shampoo", "Gold Nail Polish"]


def ranker(prompt, k):
    return [i for i in (2, 1, 4, 3, 5) if i not in prompt][:k]


def test_genitem_prompt_and_completion():
    builder = PromptBuilder("genitem", TITLES)
    messages, candidates = builder.example([1, 3], truth=2)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert "1. Red Lipstick\n2. Dry Hair Shampoo" in messages[1]["content"]
    assert "Pink Lipstick" not in messages[1]["content"], "the truth never appears in its prompt"
    assert messages[2]["content"] == "Pink Lipstick" and candidates == []
    examples = builder.training_examples([np.array([1, 3, 2]), np.array([4])])
    assert len(examples) == 1 and examples[0] == messages


def test_genlist_puts_the_truth_first():
    builder = PromptBuilder("genlist", TITLES, k=3, ranker=ranker)
    messages, _ = builder.example([1], truth=5)
    assert parse_titles(messages[2]["content"], "genlist") == ["Gold Nail Polish", "Pink Lipstick", "Mint Shampoo"]


def test_rank_slate_contains_truth_shuffled_and_completion_in_model_order():
    builder = PromptBuilder("rank", TITLES, ranker=ranker, slate_size=3, seed=1)
    messages, slate = builder.example([1], truth=5)
    assert slate == [5, 2, 4], "truth moved to the top, then the ranker's order"
    shown = messages[1]["content"].split("Candidates:\n")[1].split("\nRank")[0]
    assert sorted(parse_titles(shown, "rank")) == sorted(TITLES[i] for i in slate)
    assert parse_titles(messages[2]["content"], "rank") == [TITLES[i] for i in slate]
    _, at_prediction = builder.example([1])
    assert at_prediction == [2, 4, 3], "no truth at prediction time"


def test_classify_completion_lists_nearest_classes():
    builder = PromptBuilder("classify", TITLES, k=2, class_items=[1, 3, 5],
                            class_of_truth=lambda truth, k: [0, 2][:k])
    messages, candidates = builder.example([4], truth=2)
    assert candidates == [1, 3, 5]
    assert "Categories:\n1. Red Lipstick\n2. Dry Hair Shampoo\n3. Gold Nail Polish" in messages[1]["content"]
    assert parse_titles(messages[2]["content"], "classify") == ["Red Lipstick", "Gold Nail Polish"]
    with pytest.raises(ValueError, match="Unknown prompt_task"):
        PromptBuilder("chat", TITLES)


def test_parse_titles_and_mapping_counts_hallucinations():
    assert parse_titles(' 1. "Red Lipstick"\n2) Mint Shampoo\n\n- Extra', "genlist") == [
        "Red Lipstick", "Mint Shampoo", "Extra"]
    assert parse_titles("Red Lipstick\nand more", "genitem") == ["Red Lipstick"]
    table = np.array([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], dtype=np.float32)
    mapper = TitleMapper(TITLES, table, embed=lambda texts: np.array([[0.05, 1.0] for _ in texts]))
    assert mapper.map(["red lipstick", "Shampoo Supreme"]) == [1, 3]
    assert mapper.map(["Shampoo Supreme"], allowed=[1, 5]) == [5], "restricted to the candidates"
    report = mapper.stats.report()
    assert report["generated_titles"] == 3 and report["hallucination_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["mean_mapped_similarity"] == pytest.approx(0.870, abs=0.002)  # (0.999 + 0.741) / 2
    assert report["unique_recommendations"] == 3


def _openai_config(server, tmp_path, **extra):
    return dict(llm_provider="openai", openai_base_url=server.url + "/v1", llm_poll_seconds=0.01,
                max_test_sessions=5, prompt_samples=4, checkpoint_dir=str(tmp_path / "saved"),
                llm_answer_cache=str(tmp_path / "answers.sqlite"), **extra)


def test_openai_full_flow_and_frequency_ranking(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with Loopback() as server:
        answers = ["Glossy Pink Lipstick", "Matte Red Lipstick", "Glossy Pink Lipstick", "Pink Glossy Lipstick XL"]
        api = OpenAIFineTuning(server, answer=lambda body, i: answers[i])
        _, dataset, (train, valid, test), model = build("LLMSeqPrompt", tiny, **_openai_config(server, tmp_path))
        assert model.model_ref == "ft:gpt-4o-mini-2024-07-18:org::abc123"
        uploads = [r for r in server.requests if r["path"] == "/v1/files"]
        assert len(uploads) == 2 and b'name="purpose"' in uploads[0]["body"] and b"fine-tune" in uploads[0]["body"]
        job_request = next(r for r in server.requests if r["path"] == "/v1/fine_tuning/jobs")["body"]
        assert job_request["model"] == "gpt-4o-mini-2024-07-18" and job_request["validation_file"] == "file-2"
        lines = (next(tmp_path.glob("saved/llmseqprompt/tiny/genitem/openai-*/train.jsonl"))).read_text().splitlines()
        example = json.loads(lines[0])["messages"]
        assert [m["role"] for m in example] == ["system", "user", "assistant"]
        test_prompts = {tuple(row[:n].tolist()) for row, n in zip(test.dataset.inter_feat["item_id_list"].numpy(),
                                                                  test.dataset.inter_feat["item_length"].numpy())}
        train_users = set(train.dataset.inter_feat["user_id"].numpy())
        assert not train_users & set(test.dataset.inter_feat["user_id"].numpy()), "no test session is trained on"
        batch = next(iter(test))[0]
        scores = model.full_sort_predict(batch)
        chat = [r for r in server.requests if r["path"] == "/v1/chat/completions"][-1]["body"]
        assert chat["n"] == 4 and chat["model"] == "ft:gpt-4o-mini-2024-07-18:org::abc123"
        top = scores[0].topk(2).indices.tolist()
        assert dataset.id2token("item_id", top[0]) == "ilipstick1", "the answer given twice ranks first"
        assert dataset.id2token("item_id", top[1]) == "ilipstick0"
        assert model.evaluation_report()["hallucination_rate"] > 0
        assert test_prompts


def test_openai_reattaches_to_a_running_job(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with Loopback() as server:
        api = OpenAIFineTuning(server, polls_until_done=3)
        config = _openai_config(server, tmp_path)
        api.jobs["ftjob-7"] = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-a"}
        api.polls["ftjob-7"] = 0
        with pytest.raises(RuntimeError):  # first session: interrupted while the job runs
            monkeypatch.setattr("recbole_llm.llm.openai_ft.OpenAIPromptLLM._wait",
                                lambda self, job_id: (_ for _ in ()).throw(RuntimeError("interrupted")))
            build("LLMSeqPrompt", tiny, **config)
        monkeypatch.undo()
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        state_file = next(tmp_path.glob("saved/llmseqprompt/tiny/genitem/openai-*/job.json"))
        state = json.loads(state_file.read_text())
        assert state["job_id"] in api.jobs, "the job id is persisted before waiting"
        state["job_id"] = "ftjob-7"  # pretend the running job is the other one, to see which is polled
        state_file.write_text(json.dumps(state))
        creates = len([r for r in server.requests if r["path"] == "/v1/fine_tuning/jobs"])
        _, _, _, model = build("LLMSeqPrompt", tiny, **config)
        assert len([r for r in server.requests if r["path"] == "/v1/fine_tuning/jobs"]) == creates, "no new job"
        assert api.polls["ftjob-7"] == 3 and model.model_ref.startswith("ft:")


def test_openai_failed_job_429_and_malformed_answers(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with Loopback() as server:
        OpenAIFineTuning(server, final_status="failed")
        with pytest.raises(FineTuningFailed, match="failed: bad data"):
            build("LLMSeqPrompt", tiny, **_openai_config(server, tmp_path))
    with Loopback() as server:
        OpenAIFineTuning(server, answer=lambda body, i: "   ")
        _, _, (_, _, test), model = build("LLMSeqPrompt", tiny, **_openai_config(server, tmp_path / "b"))
        server.failures = [(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "10"})]
        scores = model.full_sort_predict(next(iter(test))[0])
        assert model.mapper.stats.parse_failures == len(scores), "blank answers are counted, not fatal"
        assert server.requests[-2]["path"] == "/v1/chat/completions", "the 429 was retried"


def test_openai_dry_run_writes_files_and_calls_nothing(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    from recbole_llm.errors import DryRunFinished

    with Loopback() as server:
        with pytest.raises(DryRunFinished, match="nothing was sent"):
            build("LLMSeqPrompt", tiny, llm_dry_run=True, **_openai_config(server, tmp_path))
        assert server.requests == []
    assert "~$" in capsys.readouterr().out
    assert next(tmp_path.glob("saved/llmseqprompt/tiny/genitem/openai-*/valid.jsonl")).exists()


@pytest.mark.parametrize("task", ["genitem", "genlist", "classify", "rank"])
def test_local_lora_flow_every_task(tiny, tmp_path, tiny_llm, task):
    import torch
    from transformers import AutoModelForCausalLM

    config = dict(llm_provider="local", llm_model=str(tiny_llm), prompt_task=task, llm_max_train_steps=2,
                  llm_batch_size=2, prompt_samples=2, llm_max_new_tokens=6, max_test_sessions=3, prompt_k=3,
                  prompt_classes=4, prompt_slate_size=4, checkpoint_dir=str(tmp_path / "saved"),
                  llm_answer_cache=str(tmp_path / "answers.sqlite"))
    _, _, (_, _, test), model = build("LLMSeqPrompt", tiny, **config)
    adapter = next(tmp_path.glob(f"saved/llmseqprompt/tiny/{task}/local-*/adapter-2"))
    assert model.model_ref == f"lora:{adapter}"
    scores = model.full_sort_predict(next(iter(test))[0])
    assert scores.shape[1] == model.n_items and torch.isfinite(scores[:, 1:]).all()
    report = model.evaluation_report()
    assert report["generated_titles"] + report["parse_failures"] > 0
    if task == "genitem":  # the LLM stays frozen, only LoRA weights learned; a rerun reuses the adapter
        from peft import PeftModel

        llm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llm), str(adapter))
        base = AutoModelForCausalLM.from_pretrained(tiny_llm)
        frozen = dict(base.named_parameters())
        for name, param in llm.named_parameters():
            plain = name.replace("base_model.model.", "").replace(".base_layer", "")
            if "lora_" not in name and plain in frozen:
                assert torch.equal(param, frozen[plain]), name
        assert any(p.abs().sum() > 0 for n, p in llm.named_parameters() if "lora_B" in n), "LoRA learned"
        stamp = (adapter / "adapter_config.json").stat().st_mtime_ns
        build("LLMSeqPrompt", tiny, **config)
        assert (adapter / "adapter_config.json").stat().st_mtime_ns == stamp


@pytest.fixture
def google_test_credentials(monkeypatch):
    """Application-default credentials as a signed-in user would have them, offline."""
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setattr("google.auth.default", lambda *args, **kwargs: (AnonymousCredentials(), "proj"))


def _vertex_config(server, tmp_path, **extra):
    return {"llm_provider": "vertex", "vertex_project": "proj", "vertex_location": "us-central1",
            "vertex_api_endpoint": server.url, "vertex_storage_endpoint": server.url,
            "vertex_staging_uri": "gs://my-bucket/tuning", "llm_poll_seconds": 0.01, "max_test_sessions": 5,
            "prompt_samples": 10, "checkpoint_dir": str(tmp_path / "saved"),
            "llm_answer_cache": str(tmp_path / "answers.sqlite"), **extra}


def test_vertex_full_flow_upload_tune_and_generate(tiny, tmp_path, google_test_credentials):
    from loopback import VertexTuning

    with Loopback() as server:
        answers = ["Glossy Pink Lipstick", "Matte Red Lipstick"] * 5
        api = VertexTuning(server, answer=lambda body, i: answers[i])
        _, dataset, (_, _, test), model = build("LLMSeqPrompt", tiny, **_vertex_config(server, tmp_path))
        assert model.model_ref == "projects/proj/locations/us-central1/endpoints/4242"
        assert sorted(api.objects) == [f"gs://my-bucket/tuning/recbole-llm-{d}/{f}" for d, f in
                                       sorted((p.parent.name.split("-", 1)[1], p.name) for p in
                                              tmp_path.glob("saved/llmseqprompt/tiny/genitem/vertex-*/*.jsonl"))]
        job = next(iter(api.jobs.values()))
        assert job["baseModel"] == "gemini-2.0-flash-001"
        assert job["supervisedTuningSpec"]["trainingDatasetUri"].endswith("/train.jsonl")
        line = json.loads(next(tmp_path.glob("saved/llmseqprompt/tiny/genitem/vertex-*/train.jsonl"))
                          .read_text().splitlines()[0])
        assert [c["role"] for c in line["contents"]] == ["user", "model"] and "systemInstruction" in line
        scores = model.full_sort_predict(next(iter(test))[0])
        calls = [r for r in server.requests if r["path"].split("?")[0].endswith(":generateContent")]
        assert calls[-1]["path"].split("?")[0] == "/v1/projects/proj/locations/us-central1/endpoints/4242:generateContent"
        counts = [c["body"]["generationConfig"]["candidateCount"] for c in calls[:2]]
        assert counts == [8, 2], "10 samples in requests of at most 8 candidates"
        assert calls[0]["body"]["systemInstruction"]["parts"][0]["text"]
        top = scores[0].topk(2).indices.tolist()
        assert {dataset.id2token("item_id", i) for i in top} == {"ilipstick0", "ilipstick1"}


def test_vertex_reattaches_failed_job_429_and_missing_bucket(tiny, tmp_path, google_test_credentials, monkeypatch):
    from loopback import VertexTuning

    from recbole_llm.llm.vertex_ft import MissingVertexSetting, VertexPromptLLM

    with Loopback() as server:
        api = VertexTuning(server, polls_until_done=3)
        config = _vertex_config(server, tmp_path)
        with pytest.raises(RuntimeError, match="interrupted"):
            with monkeypatch.context() as patch:
                patch.setattr(VertexPromptLLM, "_wait", lambda self, name: (_ for _ in ()).throw(RuntimeError("interrupted")))
                build("LLMSeqPrompt", tiny, **config)
        assert len(api.jobs) == 1
        server.failures = [(429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}, {})]
        _, _, _, model = build("LLMSeqPrompt", tiny, **config)
        assert len(api.jobs) == 1, "the rerun polled the persisted job instead of paying for a new one"
        assert next(iter(api.polls.values())) == 3 and model.model_ref.endswith("/endpoints/4242")
    with Loopback() as server:
        VertexTuning(server, final_state="JOB_STATE_FAILED")
        with pytest.raises(FineTuningFailed, match="JOB_STATE_FAILED: training data has invalid rows"):
            build("LLMSeqPrompt", tiny, **_vertex_config(server, tmp_path / "failed"))
        with pytest.raises(MissingVertexSetting, match="vertex_staging_uri"):
            build("LLMSeqPrompt", tiny, **_vertex_config(server, tmp_path / "nobucket", vertex_staging_uri=None))


def test_vertex_base_model_answers_through_llm_katan(tmp_path):
    """The base Gemini model (no tuning) through a third-party server that speaks generateContent;
    it answers one candidate per request, so n answers take several requests."""
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from google.oauth2.credentials import Credentials

    from recbole_llm.llm.cache import AnswerCache
    from recbole_llm.llm.vertex_ft import VertexPromptLLM

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    katan = shutil.which("llm-katan") or str(Path(sys.executable).parent / "llm-katan")
    server = subprocess.Popen([katan, "--model", "gemini-2.0-flash-001", "--backend", "echo", "--providers", "vertexai",
                               "--host", "127.0.0.1", "--port", str(port), "--stats-file", str(tmp_path / "stats.json")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        llm = VertexPromptLLM(tmp_path / "work", project="proj", api_endpoint=url, credentials=Credentials("token"),
                              cache=AnswerCache(tmp_path / "answers.sqlite"))
        messages = [{"role": "system", "content": "Recommend the next beauty product."},
                    {"role": "user", "content": "1. Red Lipstick\n2. Pink Lipstick"}]
        answers = llm.sample(llm.base_model(), [messages], n=3, settings={"temperature": 0.7}, show_progress=False)[0]
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert len(answers) == 3
    assert all("model=gemini-2.0-flash-001" in a and "Pink Lipstick" in a for a in answers), answers


class _KilledAfterCreate(BaseException):
    """Stands for kill -9 between the provider's answer and our saving of it (nothing after it runs)."""


def _dies_after(create):
    """``create`` as the provider runs it, then the process dies before the answer is saved."""
    def create_then_die(self, *args, **kwargs):
        create(self, *args, **kwargs)
        raise _KilledAfterCreate()

    return create_then_die


def test_openai_killed_while_creating_the_job_never_pays_twice(tiny, tmp_path, monkeypatch):
    from openai.resources.fine_tuning.jobs import Jobs

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with Loopback() as server:
        api = OpenAIFineTuning(server)
        config = _openai_config(server, tmp_path)
        with monkeypatch.context() as patch:
            patch.setattr(Jobs, "create", _dies_after(Jobs.create))
            with pytest.raises(_KilledAfterCreate):
                build("LLMSeqPrompt", tiny, **config)
        assert len(api.jobs) == 1 and len(api.files) == 2
        create = next(r for r in server.requests if r["method"] == "POST" and r["path"] == "/v1/fine_tuning/jobs")
        assert create["headers"]["idempotency-key"].startswith("recbole-llm-")
        assert create["body"]["metadata"]["recbole_llm_job"] == create["headers"]["idempotency-key"]
        _, _, _, model = build("LLMSeqPrompt", tiny, **config)
        assert len(api.jobs) == 1, "the rerun found the job instead of creating a second one"
        assert len(api.files) == 2, "nor uploaded the files again"
        assert model.model_ref.startswith("ft:")


def test_vertex_killed_while_creating_the_job_never_pays_twice(tiny, tmp_path, google_test_credentials, monkeypatch):
    from google.cloud.aiplatform_v1 import GenAiTuningServiceClient
    from loopback import VertexTuning

    with Loopback() as server:
        api = VertexTuning(server)
        config = _vertex_config(server, tmp_path)
        with monkeypatch.context() as patch:
            patch.setattr(GenAiTuningServiceClient, "create_tuning_job",
                          _dies_after(GenAiTuningServiceClient.create_tuning_job))
            with pytest.raises(_KilledAfterCreate):
                build("LLMSeqPrompt", tiny, **config)
        assert len(api.jobs) == 1 and len(api.objects) == 2
        _, _, _, model = build("LLMSeqPrompt", tiny, **config)
        assert len(api.jobs) == 1 and len(api.objects) == 2, "found by its display name; nothing paid again"
        assert model.model_ref.endswith("/endpoints/4242")


def test_constrained_decoding_stays_in_the_title_trie_and_returns_k_distinct_items(tiny, tmp_path, tiny_llm):
    from recbole_llm.llm.local import LocalPromptLLM, TitleTrie

    _, dataset, (_, _, test), model = build(
        "LLMSeqPrompt", tiny, llm_provider="local", llm_model=str(tiny_llm), prompt_finetune=False,
        prompt_constrained=True, prompt_beams=5, max_test_sessions=3, llm_answer_cache=str(tmp_path / "a.sqlite"),
        checkpoint_dir=str(tmp_path / "saved"))
    llm = model.llm
    _, tokenizer = llm._model(model.model_ref)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    trie = TitleTrie(tokenizer, model.titles, end)
    for item in (1, 7):  # every title is a path of the trie that ends in the end token
        path = tokenizer(model.titles[item], add_special_tokens=False)["input_ids"] + [end]
        assert trie.items(path) == [item] and trie.allowed(path[:1]) and end not in trie.allowed(path[:1])
    assert trie.allowed([10**6]) == [], "off the trie nothing is allowed"
    calls = []
    original = LocalPromptLLM.constrained_generate

    def spy(self, ref, messages, k, titles):
        items = original(self, ref, messages, k, titles)
        calls.append(items)
        return items

    LocalPromptLLM.constrained_generate = spy
    try:
        scores = model.full_sort_predict(next(iter(test))[0])
    finally:
        LocalPromptLLM.constrained_generate = original
    for items, row in zip(calls, scores):
        assert len(items) == 5 and len(set(items)) == 5, "k beams, k distinct catalog items"
        assert all(1 <= i < model.n_items for i in items)
        assert row.topk(5).indices.tolist() == items, "ranked in beam order, above the backfill"
    assert model.evaluation_report()["hallucination_rate"] == 0.0
    with pytest.raises(ValueError, match="prompt_constrained"):
        build("LLMSeqPrompt", tiny, llm_provider="openai", prompt_constrained=True, llm_dry_run=True,
              checkpoint_dir=str(tmp_path / "saved2"))


def _local_llm(tmp_path, tiny_llm, **options):
    from recbole_llm.llm.cache import AnswerCache
    from recbole_llm.llm.local import LocalPromptLLM

    options.setdefault("cache", AnswerCache(tmp_path / "answers.sqlite"))  # never the user's own cache
    return LocalPromptLLM(tmp_path, model=str(tiny_llm), precision="fp32", show_progress=False, **options)


def _examples(n):
    titles = TITLES[1:]
    return [[{"role": "system", "content": "Recommend."},
             {"role": "user", "content": f"Items so far:\n1. {titles[i % 5]}\nWhat is the next item?"},
             {"role": "assistant", "content": titles[(i + 1) % 5]}] for i in range(n)]


def test_lora_fine_tuning_resumes_to_the_same_adapter_and_writes_a_validation_curve(tmp_path, tiny_llm):
    """A budget raised from 2 to 4 steps continues from step 2 (as a killed run resumes from its last point);
    its adapter equals that of 4 steps in one go, and the curve has a validation loss at every point."""
    import torch
    from safetensors.torch import load_file

    train, valid = _examples(12), _examples(4)
    one_go = _local_llm(tmp_path / "a", tiny_llm, max_train_steps=4, batch_size=2, eval_steps=2)
    ref = one_go.fine_tune(train, valid)
    first = _local_llm(tmp_path / "b", tiny_llm, max_train_steps=2, batch_size=2, eval_steps=2)
    first.fine_tune(train, valid)
    resumed = _local_llm(tmp_path / "b", tiny_llm, max_train_steps=4, batch_size=2, eval_steps=2)
    ref_resumed = resumed.fine_tune(train, valid)
    a = load_file(Path(ref[5:]) / "adapter_model.safetensors")
    b = load_file(Path(ref_resumed[5:]) / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    folder = Path(ref_resumed[5:]).parent
    curve = [json.loads(line) for line in (folder / "curve.jsonl").read_text().splitlines()]
    assert [p["step"] for p in curve] == [2, 4] and all(np.isfinite(p["valid_loss"]) for p in curve)
    assert sorted(p.name for p in folder.glob("adapter-*")) == ["adapter-2", "adapter-4"]
    again = _local_llm(tmp_path / "b", tiny_llm, max_train_steps=2, batch_size=2, eval_steps=2)
    assert again.fine_tune(train, valid) == f"lora:{folder / 'adapter-2'}", "a smaller budget reuses its snapshot"
    import shutil

    shutil.rmtree(folder / "adapter-4")  # the resume point is the budget itself: nothing to train, the adapter saved
    assert _local_llm(tmp_path / "b", tiny_llm, max_train_steps=4, batch_size=2, eval_steps=2).fine_tune(
        train, valid) == ref_resumed
    c = load_file(folder / "adapter-4" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert [json.loads(line)["step"] for line in (folder / "curve.jsonl").read_text().splitlines()] == [2, 4]


def test_two_fine_tunes_of_one_folder_side_by_side_train_it_once(tmp_path, tiny_llm):
    """Two runs of ``report`` side by side may fine-tune the same folder (Rank by likelihood and constrained GenItem
    share their adapter): the second waits for the first, then reuses its adapter."""
    from concurrent.futures import ThreadPoolExecutor

    train, valid = _examples(12), _examples(4)
    llms = [_local_llm(tmp_path, tiny_llm, max_train_steps=4, batch_size=2, eval_steps=2) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        refs = list(pool.map(lambda llm: llm.fine_tune(train, valid), llms))
    assert refs[0] == refs[1]
    curve = (Path(refs[0][5:]).parent / "curve.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in curve] == [2, 4], "trained once"


def test_answer_scores_with_the_shared_prompt_cache_equal_a_plain_forward_pass(tmp_path, tiny_llm):
    import torch

    llm = _local_llm(tmp_path, tiny_llm)
    ref = llm.base_model()
    messages = _examples(1)[0][:2]
    answers = ["Red Lipstick", "Gold Nail Polish", "Mint"]
    scores = llm.score_answers(ref, messages, answers)
    model, tokenizer = llm._model(ref)
    end = llm._end_id(tokenizer)
    prompt = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"]
    for answer, score in zip(answers, scores):
        target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [end]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + target])).logits[0].float(), -1)
        expected = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(target))
        assert score == pytest.approx(expected, abs=1e-4)


def test_answer_scores_are_cached_so_a_reordering_costs_no_llm_pass(tmp_path, tiny_llm):
    from recbole_llm.llm.cache import AnswerCache

    cache = AnswerCache(tmp_path / "answers.sqlite")
    llm = _local_llm(tmp_path, tiny_llm, cache=cache)
    ref = llm.base_model()
    messages = _examples(1)[0][:2]
    answers = ["Red Lipstick", "Gold Nail Polish", "Mint"]
    first = llm.score_answers(ref, messages, answers)

    def no_pass(*args):
        raise AssertionError("a cached score was computed again")

    again = _local_llm(tmp_path, tiny_llm, cache=AnswerCache(tmp_path / "answers.sqlite"))
    again._score_answers = no_pass
    assert again.score_answers(ref, messages, answers) == first, "exact floats back from the cache"
    with pytest.raises(AssertionError, match="computed again"):
        again.score_answers(ref, messages, answers[:2])  # another candidate list is another question
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    moved = tmp_path / "moved-llm"  # the same weights in another folder: still cached
    shutil.copytree(tiny_llm, moved)
    elsewhere = _local_llm(tmp_path, moved, cache=AnswerCache(tmp_path / "answers.sqlite"))
    elsewhere._score_answers = no_pass
    assert elsewhere.score_answers(elsewhere.base_model(), messages, answers) == first
    model = AutoModelForCausalLM.from_pretrained(moved)  # other weights in that folder: another model
    with torch.no_grad():
        model.lm_head.weight.add_(0.5)
    model.save_pretrained(moved)
    changed = _local_llm(tmp_path, moved, cache=AnswerCache(tmp_path / "answers.sqlite"))
    changed._score_answers = no_pass
    with pytest.raises(AssertionError, match="computed again"):
        changed.score_answers(changed.base_model(), messages, answers)


def test_constrained_search_with_beams_for_every_title_is_the_exact_ranking(tmp_path, tiny_llm):
    """With as many beams as titles the beam search is exhaustive: it must return every catalog item in the
    order of the probabilities the scorer gives their titles (and stop early only when that is safe)."""
    llm = _local_llm(tmp_path, tiny_llm)
    ref = llm.base_model()
    messages = _examples(1)[0][:2]
    scores = llm.score_answers(ref, messages, TITLES[1:])
    exact = [i + 1 for i in sorted(range(len(scores)), key=lambda j: -scores[j])]
    assert llm.constrained_generate(ref, messages, len(TITLES) - 1, TITLES) == exact
    for k in range(1, len(TITLES)):  # stopping once no open beam can beat the k-th title changes nothing
        early = llm.constrained_generate(ref, messages, k, TITLES)
        assert early == llm.constrained_generate(ref, messages, k, TITLES, stop_early=False)
        assert len(early) == k == len(set(early)), "k beams: k distinct catalog items"


def test_rank_by_likelihood_reorders_llmseqsims_candidates_by_the_llms_probabilities(tiny, tmp_path, tiny_llm):
    import torch

    _, _, (_, _, test), model = build(
        "LLMSeqPrompt", tiny, llm_provider="local", llm_model=str(tiny_llm), prompt_task="rank",
        prompt_rank_by="likelihood", prompt_finetune=False, prompt_slate_size=4, max_test_sessions=3,
        llm_precision="fp32", checkpoint_dir=str(tmp_path / "saved"))
    assert model.builder.task == "genitem", "the prompt is the next-item model's"
    interaction = next(iter(test))[0]
    scores = model.full_sort_predict(interaction)
    seq, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
    for row, items, n in zip(scores, seq, lengths):
        session = items[:n].tolist()
        candidates = model.ranker(session, 4)
        messages, _ = model.builder.example(session[-model.max_prompt_items:])
        logp = model.llm.score_answers(model.model_ref, messages, [model.titles[c] for c in candidates])
        expected = [candidates[j] for j in sorted(range(4), key=lambda j: -logp[j])]
        assert row.topk(4).indices.tolist() == expected
        assert torch.isfinite(row[1:]).all()
    # the LLMSeqSim prior: a huge weight gives LLMSeqSim's own order back, a moderate one adds its cosine to log P
    for prior in (1e6, 3.0):
        _, _, _, fused = build(
            "LLMSeqPrompt", tiny, llm_provider="local", llm_model=str(tiny_llm), prompt_task="rank",
            prompt_rank_by="likelihood", prompt_finetune=False, prompt_slate_size=4, max_test_sessions=3,
            llm_precision="fp32", prompt_rank_prior=prior, checkpoint_dir=str(tmp_path / "saved"))
        fused_scores = fused.full_sort_predict(interaction)
        for row, items, n in zip(fused_scores, seq, lengths):
            session = items[:n].tolist()
            candidates = fused.ranker(session, 4)
            messages, _ = fused.builder.example(session[-fused.max_prompt_items:])
            logp = fused.llm.score_answers(fused.model_ref, messages, [fused.titles[c] for c in candidates])
            similarity = fused.similarities(session)
            value = [lp + prior * float(similarity[c]) for lp, c in zip(logp, candidates)]
            expected = [candidates[j] for j in sorted(range(4), key=lambda j: -value[j])]
            assert row.topk(4).indices.tolist() == expected
            if prior > 1e3:
                assert expected == candidates
    # per token: log P over the title's tokens and the end of turn, so a long title is not ranked down for its length
    _, _, _, mean = build(
        "LLMSeqPrompt", tiny, llm_provider="local", llm_model=str(tiny_llm), prompt_task="rank",
        prompt_rank_by="likelihood", prompt_finetune=False, prompt_slate_size=4, max_test_sessions=3,
        llm_precision="fp32", prompt_rank_score="mean", checkpoint_dir=str(tmp_path / "saved"))
    tokenizer = mean.llm._tokenizer()
    mean_scores = mean.full_sort_predict(interaction)
    reordered = 0
    for row, items, n in zip(mean_scores, seq, lengths):
        session = items[:n].tolist()
        candidates = mean.ranker(session, 4)
        messages, _ = mean.builder.example(session[-mean.max_prompt_items:])
        answers = [mean.titles[c] for c in candidates]
        logp = mean.llm.score_answers(mean.model_ref, messages, answers)
        counts = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers]
        assert mean.llm.answer_token_counts(answers) == counts
        expected = [candidates[j] for j in sorted(range(4), key=lambda j: -logp[j] / counts[j])]
        assert row.topk(4).indices.tolist() == expected
        reordered += expected != [candidates[j] for j in sorted(range(4), key=lambda j: -logp[j])]
    assert reordered, "per token orders some session's candidates otherwise than the whole title's log P"
    with pytest.raises(ValueError, match="prompt_rank_score"):
        build("LLMSeqPrompt", tiny, llm_provider="local", llm_model=str(tiny_llm), prompt_task="rank",
              prompt_rank_by="likelihood", prompt_rank_score="max", checkpoint_dir=str(tmp_path / "saved3"))
    with pytest.raises(ValueError, match="prompt_rank_by"):
        build("LLMSeqPrompt", tiny, llm_provider="openai", prompt_task="rank", prompt_rank_by="likelihood",
              llm_dry_run=True, checkpoint_dir=str(tmp_path / "saved2"))


def test_gradient_checkpointing_changes_memory_not_the_adapter(tmp_path, tiny_llm):
    import torch
    from safetensors.torch import load_file

    from transformers import PreTrainedModel

    calls = []
    enable = PreTrainedModel.gradient_checkpointing_enable
    PreTrainedModel.gradient_checkpointing_enable = lambda self, *a, **k: calls.append(1) or enable(self, *a, **k)
    try:
        train, valid = _examples(8), _examples(2)
        refs = [_local_llm(tmp_path / str(on), tiny_llm, max_train_steps=2, batch_size=2, eval_steps=2,
                           gradient_checkpointing=on).fine_tune(train, valid) for on in (True, False)]
    finally:
        PreTrainedModel.gradient_checkpointing_enable = enable
    assert calls == [1], "checkpointing on in the first run only"
    a, b = (load_file(Path(ref[5:]) / "adapter_model.safetensors") for ref in refs)
    assert all(torch.equal(a[k], b[k]) for k in a)
