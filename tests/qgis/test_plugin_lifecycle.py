"""The plugin loads and unloads cleanly, and never pulls torch, rasterio or mgimm_core into QGIS."""

import sys

from qgis.core import QgsApplication
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QEvent
from qgis.PyQt.QtWidgets import QDockWidget, QToolBar

HEAVY = ("torch", "transformers", "rasterio", "mgimm_core", "shapely", "pyproj")


def test_class_factory_is_lazy(plugin_module, iface):
    instance = plugin_module.classFactory(iface)
    assert type(instance).__name__ == "MGIMMPlugin"
    assert instance.provider is None and instance.dock is None  # nothing happens before initGui


def test_load_and_unload_leave_nothing_behind(plugin_module, iface, qgis_new_project):
    registry = QgsApplication.processingRegistry()
    window = iface.mainWindow()
    QgsApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # what earlier tests unloaded
    docks_before = len(window.findChildren(QDockWidget))
    toolbars_before = len(window.findChildren(QToolBar))
    instance = plugin_module.classFactory(iface)
    instance.initGui()
    assert registry.providerById("mgimm") is not None
    assert {a.name() for a in registry.providerById("mgimm").algorithms()} == {"describe_regions", "describe_tiles"}
    assert len(iface.menus["&MGIMM"]) == 7    # 4 tools, panel, settings, diagnostics
    assert iface.docks == [instance.dock] and instance.dock.parent() is window
    assert len(window.findChildren(QToolBar)) == toolbars_before + 1
    assert len(instance.toolbar.actions()) == 4  # polygon, rectangle, selected features, with guide layer

    dock, toolbar = instance.dock, instance.toolbar
    instance.unload()
    QgsApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # run the deleteLater calls
    assert registry.providerById("mgimm") is None
    assert iface.menus == {} and iface.docks == []
    assert sip.isdeleted(dock) and sip.isdeleted(toolbar)
    assert len(window.findChildren(QDockWidget)) == docks_before
    assert len(window.findChildren(QToolBar)) == toolbars_before
    assert iface.mapCanvas().mapTool() is None


def test_no_heavy_imports(plugin):
    loaded = [name for name in HEAVY if name in sys.modules]
    assert loaded == [], f"QGIS's Python imported {loaded}"
