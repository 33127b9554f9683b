import pytest

from nsynth_keras.models.cnn import build_baseline, build_cnn, feature_map_sizes


def test_baseline_parameter_counts_match_homework():
    model = build_baseline()
    counts = [layer.count_params() for layer in model.layers if layer.count_params()]
    assert counts == [160, 4640, 18496, 73856, 22539]
    assert model.output_shape == (None, 11)
    assert [type(layer).__name__ for layer in model.layers][:3] == ["Conv2D", "ReLU", "MaxPooling2D"]


def test_build_cnn_options_change_the_network():
    model = build_cnn(filters=(8, 16), kernel_size=5, padding="valid", strides=2, dropout=0.3,
                      dense_units=32, batch_norm=True, global_pool=True)
    names = [type(layer).__name__ for layer in model.layers]
    assert "BatchNormalization" in names and "Dropout" in names and "GlobalAveragePooling2D" in names
    assert model.layers[0].kernel_size == (5, 5) and model.layers[0].strides == (2, 2)
    assert model.output_shape == (None, 11)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_configuration_that_shrinks_to_nothing_is_rejected_by_name(padding):
    with pytest.raises(ValueError, match=f"strides=2.*padding={padding}|padding={padding} strides=2"):
        build_cnn(strides=2, padding=padding)


def test_feature_map_sizes():
    assert feature_map_sizes((16, 32, 64, 128), 3, "same", 1) == [32, 16, 8, 4]
    assert feature_map_sizes((16, 32), 3, "valid", 2) == [15, 3]
