"""The breast-cancer demo: real WDBC cases, three stdlib-only containers and their specs.

assets.build_demo_assets writes the data and weights, images.ensure_demo_images builds the
images locally (no registry), and specs.container_specs describes them to the registry.
"""
