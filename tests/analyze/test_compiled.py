"""Compiled Python (Cython, mypyc) by its Python name: analyze/processors/compiled.py."""
from __future__ import annotations

import pytest

from mixedstack.analyze.processors.compiled import CompiledNames, demangle
from mixedstack.model import Frame, PyFrame

CYTHON_SO = "/venv/site-packages/msgpack/_cmsgpack.cpython-313-x86_64-linux-gnu.so"
MYPYC_SO = "/venv/site-packages/30fcd23745efbc0d8d1d__mypyc.cpython-313-x86_64-linux-gnu.so"


@pytest.mark.parametrize("symbol, name", [
    ("__pyx_pw_7msgpack_9_cmsgpack_6Packer_7pack", "msgpack._cmsgpack.Packer.pack"),
    ("__pyx_pf_7msgpack_9_cmsgpack_6Packer_6pack", "msgpack._cmsgpack.Packer.pack"),
    ("__pyx_f_7msgpack_9_cmsgpack_6Packer__pack_inner", "msgpack._cmsgpack.Packer._pack_inner"),
    ("__pyx_pw_7aiohttp_12_http_parser_10HttpParser_11feed_data", "aiohttp._http_parser.HttpParser.feed_data"),
    ("__pyx_pw_7msgpack_9_cmsgpack_3unpackb", "msgpack._cmsgpack.unpackb"),
    ("CPyDef_black___format_str", "black.format_str"),
    ("CPyPy_black___format_str", "black.format_str"),
    ("CPyDef_nodes___Visitor___visit", "nodes.Visitor.visit"),
    ("CPyDef_nodes___visit_Visitor_gen_____mypyc_generator_helper__", "nodes.Visitor.visit"),
    ("CPyDef_linegen___visit_default_LineGenerator_gen_____mypyc_generator_helper__",
     "linegen.LineGenerator.visit_default"),
    ("CPyDef_trans___iter_fexpr_spans_gen_____mypyc_generator_helper__", "trans.iter_fexpr_spans"),
    ("CPyDef_black___from_configuration_WriteBack_obj_____call__", "black.WriteBack.from_configuration"),
    ("CPyDef_black____format_str_once", "black._format_str_once"),
    ("CPyDef_black_____top_level__", "black.<module>"),
    ("CPyDef_checker___TypeChecker___visit_if_stmt__StatementVisitor_glue", "checker.TypeChecker.visit_if_stmt"),
    ("CPyDef_checker___is_unreachable_map@plt", "checker.is_unreachable_map"),
    # an index whose digits read like a length that fits (PyYAML, numpy.random, scipy)
    ("__pyx_pw_4yaml_5_yaml_7CParser_1__init__", "yaml._yaml.CParser.__init__"),
    ("__pyx_pw_4yaml_5_yaml_4Mark_5__str__", "yaml._yaml.Mark.__str__"),
    ("__pyx_pw_4yaml_5_yaml_8CEmitter_15__reduce_cython__", "yaml._yaml.CEmitter.__reduce_cython__"),
    ("__pyx_pw_4yaml_5_yaml_3get_version", "yaml._yaml.get_version"),
    ("__pyx_pw_5numpy_6random_6mtrand_3get_bit_generator", "numpy.random.mtrand.get_bit_generator"),
    ("__pyx_pw_4yaml_5_yaml_5__pyx_unpickle_Mark", "yaml._yaml.__pyx_unpickle_Mark"),
    ("__pyx_pf_5scipy_7spatial_6_qhull_6_Qhull___init__", "scipy.spatial._qhull._Qhull.__init__"),
    ("__pyx_f_7msgpack_9_cmsgpack_get_data_from_buffer", "msgpack._cmsgpack.get_data_from_buffer"),
    # a generator method whose name has capitals of its own (black's visit_STRING)
    ("CPyDef_linegen___visit_STRING_LineGenerator_gen_____mypyc_generator_helper__",
     "linegen.LineGenerator.visit_STRING"),
    ("CPyPy_linegen___LineGenerator___visit_default__Visitor_glue", "linegen.LineGenerator.visit_default"),
])
def test_compiled_python_symbols_read_as_python_names(symbol, name):
    assert demangle(symbol)[0] == name


@pytest.mark.parametrize("symbol", ["deflate", "__pyx_module_is_main_msgpack", "CPyStatic_black___x",
                                    "PyObject_Call", "__pyx_pw_", "CPyDef_nothing"])
def test_other_symbols_are_left_alone(symbol):
    assert demangle(symbol) is None


def frames(*spec):
    return [Frame("1", symbol + "+0x10", dso) for symbol, dso in spec]


def test_a_wrapper_and_its_implementation_are_one_frame_and_the_c_under_them_stays():
    stack = frames(("main", "/usr/bin/python3.13"),
                   ("__pyx_pw_7msgpack_9_cmsgpack_6Packer_7pack", CYTHON_SO),
                   ("__pyx_pf_7msgpack_9_cmsgpack_6Packer_6pack", CYTHON_SO),
                   ("__pyx_f_7msgpack_9_cmsgpack_6Packer__pack_inner", CYTHON_SO),
                   ("PyBytes_FromStringAndSize", "/usr/bin/python3.13"))
    items = CompiledNames()(stack)
    assert items == [stack[0], PyFrame("msgpack._cmsgpack.Packer.pack", compiled=True),
                     PyFrame("msgpack._cmsgpack.Packer._pack_inner", compiled=True), stack[4]]


def test_mypyc_trait_glue_and_the_method_it_stands_for_are_one_frame():
    stack = frames(("CPyDef_nodes___IfStmt___accept", MYPYC_SO),
                   ("CPyDef_checker___TypeChecker___visit_if_stmt__StatementVisitor_glue", MYPYC_SO),
                   ("CPyDef_checker___TypeChecker___visit_if_stmt", MYPYC_SO))
    assert CompiledNames()(stack) == [PyFrame("nodes.IfStmt.accept", compiled=True),
                                      PyFrame("checker.TypeChecker.visit_if_stmt", compiled=True)]


def test_mypyc_wrapper_then_native_function_is_one_frame_but_recursion_is_kept():
    stack = frames(("CPyPy_black___format_str", MYPYC_SO), ("CPyDef_black___format_str", MYPYC_SO),
                   ("CPyDef_black___format_str", MYPYC_SO))
    assert CompiledNames()(stack) == [PyFrame("black.format_str", compiled=True)] * 2
