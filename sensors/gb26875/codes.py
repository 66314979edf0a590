"""Code tables of GB/T 26875.3-2011: system types (Table 4), component types (Table 5) and
analog types with their scaling (Table 6), with Chinese and English labels (brief §2.4.1-2.4.4).

Signal classes. A rule needs to know what a component's alarm *means*, and the component type
is the only hint the protocol gives, so every defined component type is put in one class:

- FIRE: detectors and call points whose alarm is a fire: manual call point 23, hydrant button 24
  (pressed to start the hydrant pump, i.e. a person saw a fire), generic fire detector 25, heat
  30-37, smoke 40-44, composite 50-53, flame 61/62, light 69, image 78, sound 79.
- GAS: combustible-gas detectors 10-13 and the gas detector 74 (a leak, not yet a fire).
- ELECTRICAL: electrical-fire monitoring 16-18 (residual current, cable temperature).
- SUPERVISORY: water-system and linkage equipment whose signals are supervisory or feedback
  (监管/反馈), e.g. a water-flow indicator flowing, a signal valve closed, a pump started: pumps
  91/95/105, tank 92, water-flow indicator 96, signal valve 97, alarm valve 98, pressure switch 99,
  valve actuator 101, dampers and vents 103/113-116, HVAC 104, deluge solenoid 106, smoke fan 111,
  doors and shutters 102/117/118, sounders 121, the linkage control device 82 and the gas
  extinguishing controller 81.
- OTHER: controllers, loops, repeater panels, graphics display (1, 21, 22, 83), general 0, and the
  modules 84-88, because a module relays whatever is wired to it and its type says nothing about
  the signal; reserved and user-defined codes are OTHER too. A point map can still place them.

Reserved codes inside a range (45-49, 63-68, ...) are not guessed into a class: a vendor that
uses one is non-standard and its meaning must come from the site's point map.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class Label:
    """A code's Chinese label (the standard's wording) and an English one."""

    zh: str
    en: str


SYSTEM_TYPES: dict[int, Label] = {
    0: Label("通用", "general"),
    1: Label("火灾报警系统", "fire alarm system"),
    10: Label("消防联动控制器", "fire linkage controller"),
    11: Label("消火栓系统", "hydrant system"),
    12: Label("自动喷水灭火系统", "automatic sprinkler system"),
    13: Label("气体灭火系统", "gas extinguishing system"),
    14: Label("水喷雾灭火系统(泵启动方式)", "water spray system, pump start"),
    15: Label("水喷雾灭火系统(压力容器启动方式)", "water spray system, pressure-vessel start"),
    16: Label("泡沫灭火系统", "foam extinguishing system"),
    17: Label("干粉灭火系统", "dry powder extinguishing system"),
    18: Label("防烟排烟系统", "smoke control system"),
    19: Label("防火门及卷帘系统", "fire doors and shutters"),
    20: Label("消防电梯", "fire elevator"),
    21: Label("消防应急广播", "emergency broadcast"),
    22: Label("消防应急照明和疏散指示系统", "emergency lighting and evacuation signs"),
    # The standard says 消防电源 (fire power supply); one write-up wrongly repeats 消防电梯.
    23: Label("消防电源", "fire power supply"),
    24: Label("消防电话", "fire telephone"),
}

COMPONENT_TYPES: dict[int, Label] = {
    0: Label("通用", "general"),
    1: Label("火灾报警控制器", "fire alarm control panel"),
    10: Label("可燃气体探测器", "combustible gas detector"),
    11: Label("点型可燃气体探测器", "point combustible gas detector"),
    12: Label("独立式可燃气体探测器", "standalone combustible gas detector"),
    13: Label("线型可燃气体探测器", "line combustible gas detector"),
    16: Label("电气火灾监控报警器", "electrical fire monitoring unit"),
    17: Label("剩余电流式电气火灾监控探测器", "residual-current electrical fire detector"),
    18: Label("测温式电气火灾监控探测器", "temperature electrical fire detector"),
    21: Label("探测回路", "detection loop"),
    22: Label("火灾显示盘", "fire repeater panel"),
    23: Label("手动火灾报警按钮", "manual call point"),
    24: Label("消火栓按钮", "hydrant button"),
    25: Label("火灾探测器", "fire detector"),
    30: Label("感温火灾探测器", "heat detector"),
    31: Label("点型感温火灾探测器", "point heat detector"),
    32: Label("点型感温火灾探测器(S型)", "point heat detector (S)"),
    33: Label("点型感温火灾探测器(R型)", "point heat detector (R)"),
    34: Label("线型感温火灾探测器", "line heat detector"),
    35: Label("线型感温火灾探测器(S型)", "line heat detector (S)"),
    36: Label("线型感温火灾探测器(R型)", "line heat detector (R)"),
    37: Label("光纤感温火灾探测器", "fibre-optic heat detector"),
    40: Label("感烟火灾探测器", "smoke detector"),
    41: Label("点型离子感烟火灾探测器", "point ionisation smoke detector"),
    42: Label("点型光电感烟火灾探测器", "point photoelectric smoke detector"),
    43: Label("线型光束感烟火灾探测器", "beam smoke detector"),
    44: Label("吸气式感烟火灾探测器", "aspirating smoke detector"),
    50: Label("复合式火灾探测器", "multi-sensor fire detector"),
    51: Label("复合式感烟感温火灾探测器", "smoke/heat multi-sensor detector"),
    52: Label("复合式感光感温火灾探测器", "flame/heat multi-sensor detector"),
    53: Label("复合式感光感烟火灾探测器", "flame/smoke multi-sensor detector"),
    61: Label("紫外火焰探测器", "ultraviolet flame detector"),
    62: Label("红外火焰探测器", "infrared flame detector"),
    69: Label("感光火灾探测器", "optical flame detector"),
    74: Label("气体探测器", "gas detector"),
    78: Label("图像摄像方式火灾探测器", "video fire detector"),
    79: Label("感声火灾探测器", "acoustic fire detector"),
    81: Label("气体灭火控制器", "gas extinguishing controller"),
    82: Label("消防电气控制装置", "fire electrical control device"),
    83: Label("消防控制室图形显示装置", "fire control room graphics display"),
    84: Label("模块", "module"),
    85: Label("输入模块", "input module"),
    86: Label("输出模块", "output module"),
    87: Label("输入/输出模块", "input/output module"),
    88: Label("中继模块", "repeater module"),
    91: Label("消防水泵", "fire pump"),
    92: Label("消防水箱", "fire water tank"),
    95: Label("喷淋泵", "sprinkler pump"),
    96: Label("水流指示器", "water-flow indicator"),
    97: Label("信号阀", "signal valve"),
    98: Label("报警阀", "alarm valve"),
    99: Label("压力开关", "pressure switch"),
    101: Label("阀驱动装置", "valve actuator"),
    102: Label("防火门", "fire door"),
    103: Label("防火阀", "fire damper"),
    104: Label("通风空调", "ventilation and air conditioning"),
    105: Label("泡沫液泵", "foam pump"),
    106: Label("管网电磁阀", "pipe network solenoid valve"),
    111: Label("防烟排烟风机", "smoke control fan"),
    113: Label("排烟防火阀", "smoke exhaust fire damper"),
    114: Label("常闭送风口", "normally closed air inlet"),
    115: Label("排烟口", "smoke vent"),
    116: Label("电控挡烟垂壁", "electric smoke curtain"),
    117: Label("防火卷帘控制器", "fire shutter controller"),
    118: Label("防火门监控器", "fire door monitor"),
    121: Label("警报装置", "alarm sounder/strobe"),
}


@dataclass(frozen=True)
class AnalogType:
    """One row of Table 6: engineering value = raw / ``divisor`` (resolution 1/divisor)."""

    zh: str
    en: str
    unit: str
    divisor: int
    minimum: float
    maximum: float


ANALOG_TYPES: dict[int, AnalogType] = {
    1: AnalogType("事件计数", "event count", "件", 1, 0, 32000),
    2: AnalogType("高度", "height", "m", 100, 0, 320),
    3: AnalogType("温度", "temperature", "°C", 10, -273, 3200),
    # 0.1 MPa per step is what the standard says, useless as it is for hydrant pressure (§2.4.4).
    4: AnalogType("压力", "pressure", "MPa", 10, 0, 3200),
    5: AnalogType("压力", "pressure", "kPa", 10, 0, 3200),
    6: AnalogType("气体浓度", "gas concentration", "%LEL", 10, 0, 100),
    7: AnalogType("时间", "time", "s", 1, 0, 32000),
    8: AnalogType("电压", "voltage", "V", 10, 0, 3200),
    9: AnalogType("电流", "current", "A", 10, 0, 3200),
    10: AnalogType("流量", "flow", "L/s", 10, 0, 3200),
    11: AnalogType("风量", "air volume", "m³/min", 10, 0, 3200),
    12: AnalogType("风速", "air speed", "m/s", 1, 0, 20),
}


class SignalClass(StrEnum):
    """What an alarm of a component type means (see the module docstring)."""

    FIRE = "fire"
    GAS = "gas"
    ELECTRICAL = "electrical"
    SUPERVISORY = "supervisory"
    OTHER = "other"


_CLASS_MEMBERS: dict[SignalClass, frozenset[int]] = {
    SignalClass.FIRE: frozenset((23, 24, 25, *range(30, 38), *range(40, 45), *range(50, 54),
                                 61, 62, 69, 78, 79)),
    SignalClass.GAS: frozenset((10, 11, 12, 13, 74)),
    SignalClass.ELECTRICAL: frozenset((16, 17, 18)),
    SignalClass.SUPERVISORY: frozenset((81, 82, 91, 92, 95, 96, 97, 98, 99, 101, 102, 103, 104,
                                        105, 106, 111, 113, 114, 115, 116, 117, 118, 121)),
}
_CLASS_OF: dict[int, SignalClass] = {
    code: cls for cls, codes in _CLASS_MEMBERS.items() for code in codes}


def signal_class(component_type: int) -> SignalClass:
    """The signal class of a component type code; OTHER for anything not classified."""
    return _CLASS_OF.get(component_type, SignalClass.OTHER)


def _fallback(code: int) -> Label:
    if 128 <= code <= 255:
        return Label(f"用户自定义({code})", f"user-defined ({code})")
    return Label(f"预留({code})", f"reserved ({code})")


def system_label(code: int) -> Label:
    """Table 4 label; reserved and user-defined codes get a label naming the code."""
    return SYSTEM_TYPES.get(code) or _fallback(code)


def component_label(code: int) -> Label:
    """Table 5 label; reserved and user-defined codes get a label naming the code."""
    return COMPONENT_TYPES.get(code) or _fallback(code)
