"""COCO captions: one caption per image id, a nested seeded sample, and captions files of the wrong shape named."""
import json

import pytest

from sld.eval.captions import CaptionRow, read_captions, sample_captions


def captions_file(tmp_path, annotations, name="captions_val2014.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"info": {}, "images": [], "annotations": annotations}))
    return path


def coco_like(images: int, per_image: int = 5) -> list[dict]:
    return [{"image_id": 1000 + 7 * i, "id": 10 * i + k, "caption": f"  picture {i}\n caption {k} "}
            for i in range(images) for k in range(per_image)]


def test_one_caption_per_image_in_a_nested_seeded_sample(tmp_path):
    by_image = read_captions(captions_file(tmp_path, coco_like(40)[::-1]))
    assert len(by_image) == 40 and by_image[1000] == [(k, f"picture 0 caption {k}") for k in range(5)]
    rows = sample_captions(by_image, 25, seed=3)
    assert [row.index for row in rows] == list(range(25))
    assert len({row.image_id for row in rows}) == 25
    for row in rows:
        assert (row.annotation_id, row.caption) in by_image[row.image_id]
    assert sample_captions(by_image, 10, seed=3) == rows[:10]
    assert sample_captions(by_image, 25, seed=3) == rows
    assert sample_captions(by_image, 25, seed=4) != rows
    assert len({row.annotation_id % 10 for row in rows}) > 1  # captions drawn, not always the first
    assert CaptionRow.from_json(json.loads(json.dumps(rows[0].to_json()))) == rows[0]


def test_captions_files_of_the_wrong_shape_are_named(tmp_path):
    with pytest.raises(ValueError, match="captions file '.*absent.json': no such file; allowed: a COCO captions"):
        read_captions(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="'.*bad.json' is not readable JSON"):
        read_captions(tmp_path / "bad.json")
    (tmp_path / "instances.json").write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(ValueError, match="'.*instances.json' has no 'annotations' list; allowed: a COCO captions"):
        read_captions(tmp_path / "instances.json")
    (tmp_path / "list.json").write_text(json.dumps([{"caption": "a cat"}]))
    with pytest.raises(ValueError, match="'.*list.json' has no 'annotations' list"):
        read_captions(tmp_path / "list.json")
    broken = captions_file(tmp_path, coco_like(2) + [{"image_id": 5, "id": 99, "caption": "  "}])
    with pytest.raises(ValueError, match="annotations\\[10\\] = .* is not \\{'image_id': int, 'id': int, 'caption': "
                                         "non-empty str\\}"):
        read_captions(broken)
    with pytest.raises(ValueError, match="sample=3 is invalid; allowed: 1..2 \\(the captioned images of the file\\)"):
        sample_captions(read_captions(captions_file(tmp_path, coco_like(2))), 3)
