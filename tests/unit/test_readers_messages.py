"""What the spectrum reader says about files it cannot read, and text encodings it must read.

Every message is one line, ``"<path>: <problem>"``, that names the value and what would be
valid; none repeats a word ("column column"), none calls binary data a column.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from xasflow import cli
from xasflow.experiment import SpectrumReadError, read_spectrum

_DOUBLED_WORD = re.compile(r"\b(\w+) \1\b", re.IGNORECASE)


def _problem(path: Path, **options) -> str:
    with pytest.raises(SpectrumReadError) as caught:
        read_spectrum(path, **options)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message[len(f"{path}: ") :]


def _columns(energy, mu, header: str = "# energy mu\n") -> str:
    return header + "".join(f"{e:.4f} {m:.6f}\n" for e, m in zip(energy, mu, strict=True))


@pytest.fixture(scope="module")
def cu_xmu_text(shared_data) -> str:
    return (shared_data / "experimental" / "cu_rt01.xmu").read_text()


# ---------------------------------------------------------------------------------------------
# binary files


def test_binary_data_without_nul_bytes_is_called_binary(tmp_path):
    # A binary file whose first bytes hold no NUL, with one short line that parses as a number:
    # it used to be read as a one-column table ("found 1 column").
    path = tmp_path / "detector.img"
    path.write_bytes(b"\x89IMG\x1a\x02\x03\n42\n" + bytes(range(1, 256)) * 16)
    problem = _problem(path)
    assert problem.startswith("is a binary file (")
    assert "control characters" in problem
    assert "column" not in problem.replace("column text file", "")


def test_binary_data_with_nul_bytes_says_why(tmp_path):
    path = tmp_path / "floats.bin"
    path.write_bytes(np.linspace(8900.0, 9100.0, 100).tobytes())
    assert _problem(path) == "is a binary file (it holds NUL bytes), not an XDI or column text file"


def test_a_real_single_column_file_is_still_called_one_column(tmp_path):
    path = tmp_path / "one_column.dat"
    path.write_text("".join(f"{8900 + step}\n" for step in range(40)))
    problem = _problem(path)
    assert problem.startswith("line 1: ")
    assert "1 column; need at least 2 (energy and mu)" in problem


# ---------------------------------------------------------------------------------------------
# text encodings


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "utf-32"])
def test_column_file_in_unicode_encodings_reads_like_utf8(tmp_path, shared_data, cu_xmu_text, encoding):
    # Windows editors save "Unicode" text as UTF-16 with a byte-order mark; the reader used to
    # call such files binary.
    expected = read_spectrum(shared_data / "experimental" / "cu_rt01.xmu")
    path = tmp_path / f"cu_{encoding}.xmu"
    path.write_bytes(cu_xmu_text.encode(encoding))
    spectrum = read_spectrum(path)
    np.testing.assert_array_equal(spectrum.energy, expected.energy)
    np.testing.assert_array_equal(spectrum.mu, expected.mu)
    assert (spectrum.element, spectrum.edge) == ("Cu", "K")
    assert spectrum.metadata["encoding"] == encoding


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig"])
def test_xdi_file_in_unicode_encodings_reads_like_utf8(tmp_path, shared_data, encoding):
    original = shared_data / "experimental" / "cu_metal_rt.xdi"
    expected = read_spectrum(original)
    path = tmp_path / "cu_metal_rt.xdi"
    path.write_bytes(original.read_text().encode(encoding))
    spectrum = read_spectrum(path)
    np.testing.assert_array_equal(spectrum.energy, expected.energy)
    np.testing.assert_array_equal(spectrum.mu, expected.mu)
    assert spectrum.metadata["format"] == "xdi"
    assert spectrum.metadata["encoding"] == encoding
    assert (spectrum.element, spectrum.edge) == ("Cu", "K")


def test_invalid_xdi_in_utf16_names_the_users_file_not_a_copy(tmp_path, shared_data):
    original = shared_data / "xdi-baddata" / "bad_13.xdi"
    path = tmp_path / "bad_13_utf16.xdi"
    path.write_bytes(original.read_text().encode("utf-16"))
    problem = _problem(path, min_points=12)
    assert problem.startswith("invalid XDI file: number of columns changes")
    assert "xasflow-xdi-" not in problem  # the temporary UTF-8 copy stays out of sight


def test_byte_order_mark_alone_is_an_empty_file(tmp_path):
    path = tmp_path / "bom.dat"
    path.write_bytes(b"\xff\xfe")
    assert _problem(path).startswith("file is empty")


def test_broken_utf16_says_so(tmp_path, cu_xmu_text):
    path = tmp_path / "broken.xmu"
    path.write_bytes(cu_xmu_text.encode("utf-16")[:-3] + b"\x00\xd8")  # a lone surrogate
    assert "is not valid UTF-16" in _problem(path)


# ---------------------------------------------------------------------------------------------
# wording


def test_too_few_distinct_energies_names_the_column_once(tmp_path):
    energy = np.repeat(np.linspace(8950.0, 9050.0, 5), 6)
    path = tmp_path / "repeats.dat"
    path.write_text(_columns(energy, np.linspace(0.1, 1.0, energy.size)))
    problem = _problem(path)
    assert problem == ("only 5 distinct energies in column 1 (energy); at least 20 are needed for a spectrum")


def test_non_finite_values_name_the_array_they_are_in(tmp_path):
    energy = np.linspace(8950.0, 9050.0, 30)
    energy[3] = np.nan
    path = tmp_path / "nan_energy.dat"
    path.write_text(_columns(energy, np.linspace(0.1, 1.0, 30)))
    assert _problem(path) == (
        "energy from column 1 (energy) has non-finite values (nan/inf) at 1 of 30 points, first at data row 4"
    )


def test_header_with_numeric_lines_says_where_the_table_began(shared_data, tmp_path):
    # SSRL's collector writes 'Weights:' and 'Offsets:' with a row of numbers each above the data.
    # With its first line Larch knows the layout (read in test_experiment.py); without it, it is
    # a file of unknown layout, and the message must say where the table seemed to begin.
    lines = (shared_data / "experimental" / "SSRL1_2006.dat").read_text().splitlines(keepends=True)
    path = tmp_path / "unknown_collector.dat"
    path.write_text("".join(lines[1:]))
    problem = _problem(path)
    assert problem.startswith("line 16: text 'Offsets:' inside the numeric data table that begins at line 15")
    assert "'#'" in problem


def test_text_without_numbers_says_what_a_table_is(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("measured on Tuesday\nsample: Cu foil\n")
    problem = _problem(path)
    assert problem.startswith(
        "no numeric data table found: expected lines of whitespace-, comma- or semicolon-"
    )


@pytest.mark.parametrize(
    ("file_name", "where"),
    [
        ("bad_13.xdi", "(line 31 has 3 values, line 29 has 4)"),
        ("bad_14.xdi", "(line 36 has 6 values, line 29 has 4)"),
        ("bad_15.xdi", "(line 29: 'nan' is not a finite number)"),
        ("bad_16.xdi", "(line 30: 'STRING' is not a finite number)"),
        ("bad_17.xdi", "(line 29: '1.4.9' is not a finite number)"),
    ],
)
def test_xdi_data_table_errors_name_the_line(shared_data, file_name, where):
    problem = _problem(shared_data / "xdi-baddata" / file_name, min_points=12)
    assert problem.startswith("invalid XDI file: ")
    assert problem.endswith(where)


def test_mu_column_out_of_range_gives_the_valid_range(shared_data):
    problem = _problem(shared_data / "experimental" / "cu_rt01.xmu", mu_column=9)
    assert problem == "mu_column=9 is out of range: the file has 3 columns, 1 to 3 (energy, mu, i0)"


def test_no_message_repeats_a_word(tmp_path, shared_data):
    energy = np.linspace(8950.0, 9050.0, 30)
    cases = {
        "repeats.dat": _columns(np.repeat(energy[:5], 6), np.linspace(0.1, 1.0, 30)),
        "nan_mu.dat": _columns(energy, np.where(energy > 9000, np.nan, 1.0)),
        "negative.dat": _columns(energy - 9000.0, np.linspace(0.1, 1.0, 30)),
        "scrambled.dat": _columns(np.random.default_rng(0).permutation(energy), energy * 0 + 1),
        "short.dat": _columns(energy[:8], energy[:8] * 0 + 1),
    }
    messages = []
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        messages.append(_problem(tmp_path / name))
    messages.append(_problem(shared_data / "experimental" / "nonxafs_1d.xdi"))
    doubled = [message for message in messages if _DOUBLED_WORD.search(message)]
    assert doubled == []


# ---------------------------------------------------------------------------------------------
# the command line


def test_every_malformed_xdi_file_is_one_line_and_exit_2(shared_data, tmp_path, capsys):
    """All 36 files of xdi-baddata end the command with one line on stderr and exit code 2
    (the 24 the XDI rules call readable hold 12 points, fewer than a spectrum needs)."""
    files = sorted((shared_data / "xdi-baddata").glob("bad_*.xdi"))
    assert len(files) == 36
    for path in files:
        code = cli.main(
            ["predict", str(path), "--checkpoint", "unused.ckpt", "--out", str(tmp_path / "x.csv")]
        )
        error = capsys.readouterr().err.strip()
        assert code == 2, path.name
        assert error.startswith(f"xasflow: error: {path}: "), path.name
        assert "\n" not in error, path.name
