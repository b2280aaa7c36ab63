"""Worker management: providers that create and remove the places where steps run."""
