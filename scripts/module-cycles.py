#!/usr/bin/env python3
"""The modules of each crate (src/, client/src/) and the modules each one uses (`crate::...`
paths), and any import cycle.

    scripts/module-cycles.py [--list]

Exits 1 and prints the cycle when a module reaches itself through the modules it uses (a
module's own submodules and its parent do not count: `mod.rs` declares them). With --list,
prints every module's uses first. Used to show that the edges (net, cluster) call down into
the router and nothing below calls back up (issue 15).
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = [ROOT / "src", ROOT / "client" / "src"]


def module_of(src, path):
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return "::".join(parts)


def main():
    return max(check(src) for src in CRATES)


def check(src):
    """Checks one crate; prints its cycle (1) or that it has none (0)."""
    files = {module_of(src, path): path for path in src.rglob("*.rs")}
    modules = set(files)
    uses = {}
    for module, path in files.items():
        text = path.read_text()
        # Test modules may reach anywhere; only the code that ships counts.
        text = text.split("#[cfg(test)]\nmod tests")[0].split("#[cfg(test)]\npub(crate) mod tests")[0]
        # Doc links name modules without using them.
        text = re.sub(r"//[^\n]*", "", text)
        found = set()
        for group in re.findall(r"\bcrate::([\w:]+(?:::\{[^;]*?\})?)", text, re.S):
            base, _, inner = group.partition("::{")
            paths = [base] + [f"{base}::{item.strip()}" for item in re.split(r"[,\s]+", inner) if item.strip("{} ")]
            for used in paths:
                parts = used.replace("{", "").replace("}", "").split("::")
                while parts and "::".join(parts) not in modules:
                    parts.pop()
                target = "::".join(parts)
                related = target.startswith(module + "::") or module.startswith(target + "::")
                if target and target != module and not related:
                    found.add(target)
        uses[module] = sorted(found)
    if "--list" in sys.argv:
        for module in sorted(uses):
            print(f"{module or 'lib'}: {', '.join(uses[module]) or '-'}")
    state = {}

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for used in uses.get(module, []):
            if state.get(used) == "open":
                return stack[stack.index(used):] + [used]
            if used not in state:
                cycle = visit(used, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(uses):
        if module not in state:
            cycle = visit(module, [])
            if cycle:
                print(f"{src.relative_to(ROOT)}: import cycle: " + " -> ".join(cycle), file=sys.stderr)
                return 1
    print(f"{src.relative_to(ROOT)}: no import cycle among {len(uses)} modules", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
