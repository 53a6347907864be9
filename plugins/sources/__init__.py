"""Built-in model sources: timm, torchvision and tiny models, package weights, and the zoo."""
