import hspace


def test_every_top_level_name_resolves():
    for name in hspace.__all__:
        assert getattr(hspace, name) is not None, name


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute"):
        hspace.not_a_thing  # noqa: B018
