"""Model files that are missing or do not parse: one typed error naming the file (configs:
test_config.py)."""
import pytest

from timbrespace_ray.clustering.model import MODEL_FILE, KMeansModel
from timbrespace_ray.documents import read_document
from timbrespace_ray.encoder import load_encoder
from timbrespace_ray.errors import ConfigError, ModelFormatError


def test_json_and_yaml_documents_parse(tmp_path):
    (tmp_path / "a.json").write_text('{"k": [1, 2]}')
    (tmp_path / "a.yaml").write_text("k:\n  - 1\n  - 2\n")
    assert read_document(tmp_path / "a.json", "JSON", ModelFormatError, "missing") == {"k": [1, 2]}
    assert read_document(tmp_path / "a.yaml", "YAML", ConfigError, "missing") == {"k": [1, 2]}


def test_kmeans_model_missing_or_broken(tmp_path):
    with pytest.raises(ModelFormatError, match=f"no {MODEL_FILE} in"):
        KMeansModel.load(str(tmp_path))
    (tmp_path / MODEL_FILE).write_text('{"cluster_centers": [[1, 2]')
    with pytest.raises(ModelFormatError, match=rf"{MODEL_FILE} is not valid JSON"):
        KMeansModel.load(str(tmp_path))


def test_encoder_config_missing_or_broken(tmp_path):
    with pytest.raises(ModelFormatError, match="no config.json in"):
        load_encoder(tmp_path)
    (tmp_path / "config.json").write_text("{hidden_dim: 8}")
    with pytest.raises(ModelFormatError, match="config.json is not valid JSON"):
        load_encoder(tmp_path)

