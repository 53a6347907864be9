"""Built-in datasets (Fashion-MNIST, photos, ImageNet, small sets) and data synthesis from BatchNorm statistics."""
