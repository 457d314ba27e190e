"""Python cross-references by unique name, as Sphinx resolves ``.name`` references.

The docstrings name objects the way the code reaches them (``Job`` inside the session
module, ``stem_explorer.open_dataset`` for the function documented under
:mod:`stem_explorer.io`). A reference with no exact target resolves to the one
documented object of the role's type whose name ends with the same last component;
none, or several, leave the reference unresolved, which nitpicky mode reports.
"""

from sphinx.util.nodes import make_refnode


def _resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    last = node["reftarget"].rsplit(".", 1)[-1]
    types = set(domain.objtypes_for_role(node["reftype"]) or ())
    found = [(name, entry) for name, entry in domain.objects.items()
             if name.rsplit(".", 1)[-1] == last and entry.objtype in types and not entry.aliased]
    if len(found) != 1:
        return None
    name, entry = found[0]
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, name)


def setup(app):
    app.connect("missing-reference", _resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
