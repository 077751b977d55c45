"""The layers contract of pyproject.toml ([tool.importlinter]) holds for every import of the package, at module
level or inside a function: nothing imports up the layers, and no import forms a circle."""
import ast
import pathlib
import tomllib

import recbole_llm

PACKAGE = pathlib.Path(recbole_llm.__file__).parent
ROOT = PACKAGE.parent


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from . import x`` imports x, not the package)."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                if not target.startswith("recbole_llm"):
                    continue
                submodules = [f"{target}.{alias.name}" for alias in node.names if is_module(f"{target}.{alias.name}")]
                found.update(submodules or [target])
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("recbole_llm"))
        graph[name] = found - {name}
    return graph


def layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    return [[part.strip() for part in layer.split(":")] for layer in contract["layers"]]


def layer_of(module: str, contract: list[list[str]]) -> int | None:
    for index, layer in enumerate(contract):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return index
    return None


def test_every_module_has_a_layer():
    contract = layers()
    assert [m for m in imports() if m != "recbole_llm" and layer_of(m, contract) is None] == []


def upward_imports(graph: dict, contract: list[list[str]]) -> list[str]:
    upward = []
    for module, targets in graph.items():
        mine = layer_of(module, contract)
        if mine is None:  # the package's own __init__: it is the top, it may import anything
            continue
        upward += [f"{module} -> {target}" for target in targets
                   if target != "recbole_llm" and layer_of(target, contract) < mine]
        if "recbole_llm" in targets and mine > 0:
            upward.append(f"{module} -> recbole_llm")
    return upward


def circles(graph: dict) -> list[str]:
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if target.startswith(node + "."):  # a package importing its own submodules is not a circle
                continue
            if state.get(target) == "open":
                found.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_no_module_imports_up_the_layers():
    assert upward_imports(imports(), layers()) == []


def test_no_import_circle_between_modules():
    assert circles(imports()) == []


def test_the_checks_find_what_they_look_for():
    contract = layers()
    graph = {"recbole_llm.model.ensemble": {"recbole_llm.quick_start"}, "recbole_llm.data.catalog":
             {"recbole_llm.embeddings.store"}, "recbole_llm.embeddings.store": {"recbole_llm.data.catalog"}}
    assert upward_imports(graph, contract) == ["recbole_llm.model.ensemble -> recbole_llm.quick_start"]
    assert circles(graph) == ["recbole_llm.data.catalog -> recbole_llm.embeddings.store -> recbole_llm.data.catalog"]
