"""A griffe extension for the API pages: Sphinx cross-reference roles in docstrings
(``:func:`x```, ``:class:`~x```) become inline code, which mkdocstrings' Markdown renders."""

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`")


class SphinxRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(r"`\1`", obj.docstring.value)
