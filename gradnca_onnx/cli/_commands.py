"""The sub-commands of ``gradnca-onnx``: name -> where the click command is defined.

Each is imported only when it runs or when ``--help`` lists it (:class:`gradnca_onnx.cli.
_Group`); the command modules import nothing from :mod:`gradnca_onnx.cli` itself, so there is
no import circle. One line per command; keep sorted.
"""

#: Sub-command name -> ``"module:attribute"`` (a module of this package).
COMMANDS: dict[str, str] = {
    "benchmark": "evaluate:benchmark_command",
    "cache": "cache:cache_group",
    "evaluate": "evaluate:evaluate_command",
    "export": "export:export_cmd",
    "finetune": "finetune:finetune",
    "import": "import_onnx:import_cmd",
    "rank": "rank:rank_command",
    "zoo": "export:zoo_group",
}
