"""`iglubuild schema`: the recipe JSON Schema, for editors that check YAML while you type."""

from __future__ import annotations

import argparse
import json

from iglubuild.settings import Settings

NAME = "schema"
HELP = "print the JSON Schema of recipe.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(settings: Settings, args: argparse.Namespace) -> int:
    from iglubuild.recipe import Recipe

    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "iglubuild recipe"
    print(json.dumps(schema, indent=2, sort_keys=True))
    return 0
