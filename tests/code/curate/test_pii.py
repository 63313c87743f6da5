"""Passwords via detect-secrets' keyword detection (with its look-alikes kept), the IP fixes, and the
`--pii-model` plumbing with a tiny randomly initialised token-classification model (no download)."""

from __future__ import annotations

import pytest

from domainfm.code.curate import pii

SECRET = "s3cr3t-Pa55word!"


@pytest.mark.parametrize("path,text", [
    ("settings.py", f'DATABASE_PASSWORD = "{SECRET}"\n'),
    ("settings.py", f'SMTP_PASS = "{SECRET}"\n'),
    ("settings.py", f"APP_SECRET = '{SECRET}'\n"),
    ("settings.py", f'password: str = "{SECRET}"\n'),
    ("docker-compose.yml", f"services:\n  db:\n    environment:\n      db_password: {SECRET}\n"),
    (".env", f"MYSQL_PWD={SECRET}\nDEBUG=1\n"),
    ("src/main/java/Db.java", f'private static final String DB_PASSWORD = "{SECRET}";\n'),
    ("config.js", f'module.exports = {{ dbPassword: "{SECRET}" }};\n'),
    ("deploy.sh", f'export MYSQL_PWD="{SECRET}"\nmysql -u root\n'),
])
def test_password_like_names_are_redacted(path, text):
    spans = pii.find_pii(text, path=path)
    out = pii.redact(text, spans)
    assert SECRET not in out and "<PASSWORD>" in out
    assert any(s.type == "password" for s in spans)


@pytest.mark.parametrize("path,text", [
    ("settings.py", 'DB_PASSWORD = os.environ["DB_PASSWORD"]\n'),
    ("settings.py", 'DB_PASSWORD = ""\n'),
    ("settings.py", 'DB_PASSWORD = "${DB_PASSWORD}"\n'),
    ("settings.py", 'DB_PASSWORD = "changeme"\n'),
    ("settings.py", 'password = "<your-password>"\n'),
    ("settings.py", "def login(user: str, password: str) -> bool:\n    pass\n"),
    ("settings.py", "password = getpass.getpass()\n"),
    ("settings.py", "secret_type = 'Base64 High Entropy String'\n"),
    ("app.yaml", "db_password: ${DB_PASSWORD}\n"),
    (".env", "DB_PASSWORD=\nAPI_SECRET=${VAULT_SECRET}\n"),
    ("Db.java", "String password = System.getenv(\"DB_PASSWORD\");\n"),
])
def test_password_look_alikes_stay(path, text):
    assert [s for s in pii.find_pii(text, path=path) if s.type == "password"] == []


def test_ip_after_word_ending_in_v_and_before_full_stop():
    text = 'srv = "93.184.216.34"\nThe API server listens on 93.184.216.34.\n__version__ = "1.2.3.4"\nbuild = "v2.10.11.12"\n'
    out = pii.redact(text, pii.find_pii(text))
    assert "93.184.216.34" not in out and out.count("172.16.45.67") + out.count("10.0.12.34") + out.count(
        "192.168.78.90") + out.count("10.11.22.33") + out.count("192.168.201.7") == 2
    assert "1.2.3.4" in out and "2.10.11.12" in out
    assert "1.2.3.4.5" in pii.redact("release 1.2.3.4.5 is out\n", pii.find_pii("release 1.2.3.4.5 is out\n"))


@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory):
    """A 1-layer BERT token classifier, randomly initialised, saved as a local folder; its classifier
    is then set so that the word `alice` (and only it) scores B-NAME, to check offsets end to end."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("starpii-tiny")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "alice", "wrote", "this", "module", "#", "author",
             ":", "=", "def", "f", "(", ")", "return", "1", "bob", "the"]
    wp = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64,
                     id2label={0: "O", 1: "B-NAME", 2: "I-NAME"}, label2id={"O": 0, "B-NAME": 1, "I-NAME": 2})
    model = BertForTokenClassification(cfg)
    with torch.no_grad():  # make the random model decide by the input token: a feature only `alice` has
        emb = model.bert.embeddings
        for table in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
            table.weight.zero_()
        emb.word_embeddings.weight[vocab.index("alice"), 0] = 50.0
        layer = model.bert.encoder.layer[0]  # residual-only layer: hidden = LayerNorm(embedding)
        layer.attention.output.dense.weight.zero_()
        layer.output.dense.weight.zero_()
        alice = model.bert(torch.tensor([[vocab.index("alice")]])).last_hidden_state[0, 0]
        model.classifier.weight.zero_()
        model.classifier.weight[1] = alice * 10  # B-NAME for the alice direction, O (bias 0) elsewhere
        model.classifier.bias.copy_(torch.tensor([0.0, -5.0, -50.0]))
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.mark.slow  # imports torch + transformers' pipeline
def test_pii_model_folder_plumbing(tiny_ner):
    from domainfm.code.curate.pii_ner import NerPII

    ner = NerPII(tiny_ner)
    text = "# author : alice\ndef f ( ) :\n    return 1  # bob wrote this module\n"
    spans = pii.find_pii(text, path="m.py", ner=ner)
    names = [s for s in spans if s.type == "name"]
    assert [text[s.start:s.end] for s in names] == ["alice"] and names[0].replacement == "<NAME>"
    assert "alice" not in pii.redact(text, spans) and "bob" in pii.redact(text, spans)


def test_pii_model_missing_folder_is_a_user_error(tmp_path):
    from domainfm.code.curate.pii_ner import NerPII
    from domainfm.core.errors import UserError

    with pytest.raises(UserError):
        NerPII(tmp_path / "nope")("alice")


def test_cli_missing_pii_model_fails_before_any_work(tmp_path, capsys):
    from domainfm.cli import main

    repo = tmp_path / "src" / "a__b"
    repo.mkdir(parents=True)
    (repo / "m.py").write_text("AUTHOR = 'alice'\n")
    rc = main(["code", "curate", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "--pii-model",
               str(tmp_path / "no-model"), "--no-humaneval", "--mbpp", "none"])
    err = capsys.readouterr().err
    assert rc != 0 and "--pii-model" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "data").exists()
