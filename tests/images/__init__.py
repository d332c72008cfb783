"""image prepare and image clone, with the real disk tools on small images the tests build."""
