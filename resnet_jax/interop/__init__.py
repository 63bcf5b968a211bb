"""The PyTorch world: torchvision weights both ways (`torchvision_weights`), PyTorch twins of
every model (`torch_models`, imports torch), and export for serving (`export`)."""
