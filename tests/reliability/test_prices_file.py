"""``SDSTUDIO_HOME/prices.yaml`` is hand-written too: a wrong entry is one line naming the model id, never a
price made up from it (a quoted "12" used to be read as the prices 1 and 2; .inf and negatives were taken)."""
from __future__ import annotations

import pytest

from sdstudio.cli import main
from sdstudio.errors import ConfigError
from sdstudio.pricing import load_prices, price_for

BAD = ['fake-model: "12"', "fake-model: [.inf, 1]", "fake-model: [1, .nan]", "fake-model: [-1, 1]",
       "fake-model: [1, 2, 3]", "fake-model: [true, 1]", "fake-model: {0: 1, 1: 2}", "fake-model: 3"]


@pytest.mark.parametrize("text", BAD)
def test_a_bad_price_entry_is_one_line_naming_the_model(home, text):
    home.mkdir()
    (home / "prices.yaml").write_text(text + "\n")
    with pytest.raises(ConfigError, match=r"prices.yaml: fake-model: expected \[input_usd_per_M, output_usd_per_M\]"):
        load_prices(home)


def test_generate_with_a_bad_prices_file_exits_2_with_one_line(home, capsys):
    home.mkdir()
    (home / "prices.yaml").write_text('fake-model: "12"\n')
    code = main(["generate", "--provider", "openai_compatible", "--model", "fake-model", "--base-url",
                 "http://127.0.0.1:9/v1", "--topics", "Heaps", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "prices.yaml: fake-model: expected" in err[0], err


def test_good_prices_still_read_and_an_empty_file_adds_none(home):
    home.mkdir()
    (home / "prices.yaml").write_text("fake-model: [2, 8.5]\nother: [0, 0]\n")
    assert price_for("fake-model", home).output_per_m == 8.5 and price_for("other", home).known
    (home / "prices.yaml").write_text("# nothing yet\n")
    assert load_prices(home)["gpt-4o"] == (2.50, 10.00)
