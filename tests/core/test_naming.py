"""fmc.core.naming: the one home of the pair, list and run-file names."""

from __future__ import annotations

from pathlib import Path

from fmc.core import naming


def test_pair_names_round_trip():
    angle, fused = naming.pair_file_names(3, "nucleus")
    assert (angle, fused) == ("image_3_nucleus_angle.tif", "image_3_nucleus_fused.tif")
    assert naming.partner_name(angle) == fused and naming.partner_name(fused) == angle
    assert naming.partner_name("image_3_nucleus_ANGLE.TIFF") == "image_3_nucleus_fused.TIFF"
    assert naming.partner_name("notes.tif") is None
    assert naming.h5_name(angle) == "image_3_nucleus_angle.h5"
    assert naming.partner_name(naming.h5_name(angle)) == "image_3_nucleus_fused.h5"


def test_kinds_and_suffixes():
    assert naming.file_kind("image_1_membrane_fused.tiff") == "fused"
    assert naming.file_kind("my_view.tif") == "angle"  # a lone view is an input
    assert naming.is_ground_truth("a_fused.h5") and not naming.is_ground_truth("a_fusedx.tif")
    assert naming.is_tiff("A.TIF") and naming.is_h5("b.hdf5") and not naming.is_tiff("b.h5")


def test_list_names_and_rows(tmp_path: Path):
    assert naming.lists_prefix(3) == "study3" and naming.lists_prefix("all") == "all"
    assert naming.lists_prefix("all", 4) == "holdout4"
    assert naming.list_file_name("holdout4", "nucleus", "val") == "holdout4_nucleus_val.csv"
    listed = tmp_path / "list.csv"
    listed.write_text("angle;fused\n\n# a comment\na_angle.h5;a_fused.h5\nb_angle.h5 , b_fused.h5\n")
    assert list(naming.split_list_rows(listed)) == [(4, ["a_angle.h5", "a_fused.h5"]),
                                                     (5, ["b_angle.h5", "b_fused.h5"])]
