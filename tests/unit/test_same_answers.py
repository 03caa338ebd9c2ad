"""benchmarks/same_answers.py: two archives' handlers over the same test images, compared."""

from support.servers import build_test_store, write_checkpoint

from benchmarks import same_answers
from serving import archive


def test_a_rebuilt_archive_answers_alike_and_a_retrained_one_does_not(tmp_path):
    store = build_test_store(tmp_path)  # emnist-cnn 1.0 and 2.0: different weights
    again = write_checkpoint(tmp_path / "again.pt", seed=0)  # 1.0's weights, archived as 1.1
    archive.main([str(again), "--name", "emnist-cnn", "--version", "1.1", "--store", str(store)])
    args = ["--limit", "300", "--precision", "fp32", "--protocol", "emnist47"]
    old, rebuilt, other = (store / f"emnist-cnn-{v}.mar" for v in ("1.0", "1.1", "2.0"))

    same = same_answers.main([str(old), str(rebuilt), *args])
    assert same["identical"] and same["top1_agreement"] == 1.0
    assert same["max_probability_difference"] == 0.0 and same["images"] == 300

    different = same_answers.main([str(old), str(other), *args])
    assert not different["identical"] and different["max_probability_difference"] > 0
