"""GB/T 26875.3 application data units, time labels, status bits and code tables."""

from __future__ import annotations

from datetime import datetime

import pytest

from sensors.gb26875.adu import (
    Adu,
    AduRejection,
    AduRejectReason,
    AduType,
    AnalogValue,
    ComponentStatus,
    FacilityOperation,
    Heartbeat,
    SystemStatus,
    UitdOperation,
    UitdSoftwareVersion,
    UitdStatus,
    UitdTime,
    Unknown,
    clock_sync_adu,
    duty_check_adu,
    initialise_adu,
    parse_adu,
)
from sensors.gb26875.bits import (
    ComponentStatusBits,
    FacilityOperationFlags,
    SystemStatusBits,
    UitdOperationFlags,
    UitdStatusBits,
    alarm_bits,
    is_fire,
)
from sensors.gb26875.codes import (
    ANALOG_TYPES,
    COMPONENT_TYPES,
    SignalClass,
    component_label,
    signal_class,
    system_label,
)
from sensors.gb26875.frame import Deframer, Frame
from sensors.gb26875.timelabel import BadTimeLabel, decode_time_label, encode_time_label
from tests.support.gb26875_vectors import ADU_ANALOG, ADU_SYSTEM_STATUS, VECTORS

EVENT_TIME = datetime(2012, 9, 26, 9, 58, 2)
EVENT_LABEL = bytes.fromhex("02 3A 09 1A 09 0C")


def adu_of(number: int) -> bytes:
    (frame,) = Deframer().feed(VECTORS[number])
    assert isinstance(frame, Frame)
    return frame.adu


def objects(adu: bytes) -> tuple[object, ...]:
    parsed = parse_adu(adu)
    assert isinstance(parsed, Adu), parsed
    return parsed.objects


def test_vector_1_component_fire() -> None:
    (obj,) = objects(adu_of(1))
    assert obj == ComponentStatus(sys_type=1, sys_addr=1, comp_type=40, comp_addr=0x0002000A,
                                  status=0x0002, description="", time_label=EVENT_LABEL,
                                  time=EVENT_TIME)
    assert isinstance(obj, ComponentStatus)
    assert obj.comp_addr == 131082  # "2号10区": zone 10 (low half), point 2
    assert obj.flags == ComponentStatusBits.FIRE
    assert is_fire(obj.status)  # a fire although bit 0 ("normal") is clear


def test_vector_14_other_vendor_component() -> None:
    (obj,) = objects(adu_of(14))
    assert isinstance(obj, ComponentStatus)
    assert (obj.sys_type, obj.sys_addr, obj.comp_type) == (0x81, 3, 17)
    assert obj.comp_addr == 0x20082715
    assert obj.flags == ComponentStatusBits.FIRE
    assert obj.description == bytes.fromhex("B0 A1 A9 96").decode("gb18030")
    assert obj.time == datetime(2021, 6, 15, 15, 18, 53)
    assert system_label(obj.sys_type).en == "user-defined (129)"
    assert signal_class(obj.comp_type) == SignalClass.ELECTRICAL


@pytest.mark.parametrize("number", [4, 9])
def test_vectors_4_and_9_uitd_mains_fault(number: int) -> None:
    assert objects(adu_of(number)) == (
        UitdStatus(UitdStatusBits.MAINS_POWER_FAULT, EVENT_LABEL, EVENT_TIME),)


def test_vector_5_duty_check_answer() -> None:
    (obj,) = objects(adu_of(5))
    assert obj == UitdOperation(UitdOperationFlags.DUTY_CHECK_ANSWER, 1, EVENT_LABEL, EVENT_TIME)


def test_vectors_6_and_7_version_and_time() -> None:
    assert objects(adu_of(6)) == (UitdSoftwareVersion(1, 1),)
    assert objects(adu_of(7)) == (UitdTime(EVENT_LABEL, EVENT_TIME),)


@pytest.mark.parametrize(("number", "type_flag"), [(8, 81), (10, 85), (11, 89), (12, 90),
                                                   (13, 91)])
def test_centre_side_types_parse_as_unknown(number: int, type_flag: int) -> None:
    adu = adu_of(number)
    assert parse_adu(adu) == Unknown(type_flag, adu)


def test_control_adus_equal_vectors_11_to_13() -> None:
    assert initialise_adu() == adu_of(11)
    assert clock_sync_adu(EVENT_TIME) == adu_of(12)
    assert clock_sync_adu(EVENT_LABEL) == adu_of(12)
    assert duty_check_adu(0x0A) == adu_of(13)
    assert duty_check_adu() == adu_of(13)
    with pytest.raises(ValueError, match="6 bytes"):
        clock_sync_adu(b"\x00")


def test_adu_vector_system_status_two_objects() -> None:
    first, second = objects(ADU_SYSTEM_STATUS)
    assert first == SystemStatus(1, 2, 0x0204, bytes.fromhex("04 00 09 02 07 15"),
                                 datetime(2021, 7, 2, 9, 0, 4))
    assert isinstance(first, SystemStatus)
    assert isinstance(second, SystemStatus)
    assert first.flags == SystemStatusBits.FAULT | SystemStatusBits.BACKUP_POWER_FAULT
    assert (second.sys_type, second.sys_addr, second.status) == (13, 3, 0x0105)
    assert second.flags == (SystemStatusBits.NORMAL | SystemStatusBits.FAULT
                            | SystemStatusBits.MAINS_POWER_FAULT)
    assert system_label(second.sys_type).zh == "气体灭火系统"


def test_adu_vector_analog_temperature() -> None:
    (obj,) = objects(ADU_ANALOG)
    assert obj == AnalogValue(1, 2, 40, 0x04030201, 3, 800, 80.0, "°C",
                              bytes.fromhex("04 00 09 02 07 15"), datetime(2021, 7, 2, 9, 0, 4))


def test_analog_negative_and_unscaled_types() -> None:
    body = bytes.fromhex("01 01 1F 05 00 00 00") + bytes((3,)) + (-125).to_bytes(2, "little",
                                                                                 signed=True)
    (cold,) = objects(bytes((3, 1)) + body + EVENT_LABEL)
    assert isinstance(cold, AnalogValue)
    assert (cold.raw, cold.value, cold.unit) == (-125, -12.5, "°C")
    vendor = bytes((3, 1)) + body[:7] + bytes((200,)) + body[8:] + EVENT_LABEL
    (raw_only,) = objects(vendor)
    assert isinstance(raw_only, AnalogValue)
    assert (raw_only.raw, raw_only.value, raw_only.unit) == (-125, None, None)


def test_facility_operation() -> None:
    (obj,) = objects(bytes((4, 1, 1, 1, 0b0000_0110, 7)) + EVENT_LABEL)
    assert obj == FacilityOperation(1, 1, FacilityOperationFlags.MUTE
                                    | FacilityOperationFlags.MANUAL_ALARM, 7, EVENT_LABEL,
                                    EVENT_TIME)


def test_description_padding_and_bad_bytes() -> None:
    text = "2F东区贴片线".encode("gb18030")
    for pad in (b"\x00", b" "):
        record = bytes((1, 1, 42)) + bytes(4) + bytes((2, 0)) + text.ljust(31, pad) + EVENT_LABEL
        (obj,) = objects(bytes((2, 1)) + record)
        assert isinstance(obj, ComponentStatus)
        assert obj.description == "2F东区贴片线"
    broken = bytes((1, 1, 42)) + bytes(6) + b"\xff" + bytes(30) + EVENT_LABEL
    (obj,) = objects(bytes((2, 1)) + broken)
    assert isinstance(obj, ComponentStatus)
    assert obj.description == "\ufffd"


def test_a_bad_object_time_keeps_the_object() -> None:
    label = bytes((0, 0, 0, 31, 2, 24))  # 31 February
    (obj,) = objects(bytes((21, 1, 0x02)) + label)
    assert obj == UitdStatus(UitdStatusBits.FIRE, label, None)


def test_heartbeat_and_rejections() -> None:
    assert parse_adu(b"") == Heartbeat()
    assert parse_adu(b"\x15") == AduRejection(AduRejectReason.BAD_LENGTH, 21,
                                              "a 1-byte ADU has no count")
    bad_count = parse_adu(bytes((21, 0)))
    assert isinstance(bad_count, AduRejection)
    assert bad_count.reason == AduRejectReason.BAD_COUNT
    too_many = parse_adu(bytes((2, 23)) + bytes(23 * 46))  # Table 3: at most 22
    assert isinstance(too_many, AduRejection)
    assert too_many.reason == AduRejectReason.BAD_COUNT
    at_max = parse_adu(bytes((2, 22)) + bytes(22 * 46))
    assert isinstance(at_max, Adu)
    assert len(at_max.objects) == 22
    # The vendor frame of brief §2.7 with 50-byte component objects: strict length check.
    fifty = parse_adu(bytes((2, 1)) + bytes(50))
    assert isinstance(fifty, AduRejection)
    assert fifty.reason == AduRejectReason.BAD_LENGTH
    short = parse_adu(ADU_SYSTEM_STATUS[:-1])
    assert isinstance(short, AduRejection)
    assert short.reason == AduRejectReason.BAD_LENGTH


@pytest.mark.parametrize("type_flag", [6, 7, 26, 22, 61, 127, 128, 254, 255])
def test_unknown_types_keep_their_bytes(type_flag: int) -> None:
    adu = bytes((type_flag, 1, 5)) + b"hello"
    assert parse_adu(adu) == Unknown(type_flag, adu)


OBJECT_SIZES = {AduType.SYSTEM_STATUS: 10, AduType.COMPONENT_STATUS: 46,
                AduType.ANALOG_VALUE: 16, AduType.FACILITY_OPERATION: 10,
                AduType.FACILITY_SOFTWARE_VERSION: 4, AduType.FACILITY_TIME: 8,
                AduType.UITD_STATUS: 7, AduType.UITD_OPERATION: 8,
                AduType.UITD_SOFTWARE_VERSION: 2, AduType.UITD_TIME: 6}


@pytest.mark.parametrize(("kind", "size"), sorted(OBJECT_SIZES.items()))
def test_every_known_type_is_length_checked(kind: AduType, size: int) -> None:
    for length in range(60):
        result = parse_adu(bytes((kind, 1)) + bytes(length))
        assert isinstance(result, Adu) == (length == size), (kind, length, result)
        assert isinstance(result, Adu | AduRejection)


# --- time labels -----------------------------------------------------------------------------

def test_time_label_brief_example_and_round_trip() -> None:
    assert decode_time_label(EVENT_LABEL) == EVENT_TIME
    assert encode_time_label(EVENT_TIME) == EVENT_LABEL
    assert encode_time_label(datetime(2099, 12, 31, 23, 59, 59, 999999)) == bytes(
        (59, 59, 23, 31, 12, 99))


@pytest.mark.parametrize("raw", [
    bytes((60, 0, 0, 1, 1, 20)), bytes((0, 0, 24, 1, 1, 20)), bytes((0, 0, 0, 0, 1, 20)),
    bytes((0, 0, 0, 1, 13, 20)), bytes((0, 0, 0, 29, 2, 23)), bytes((0, 0, 0, 1, 1, 100)),
    b"\x00" * 5, b"\xff" * 6])
def test_impossible_time_labels_are_values_not_exceptions(raw: bytes) -> None:
    result = decode_time_label(raw)
    assert isinstance(result, BadTimeLabel)
    assert result.raw == raw


def test_time_label_leap_day_and_encode_range() -> None:
    assert decode_time_label(bytes((0, 0, 0, 29, 2, 24))) == datetime(2024, 2, 29)
    with pytest.raises(ValueError, match="1999"):
        encode_time_label(datetime(1999, 12, 31))


# --- bits and codes --------------------------------------------------------------------------

def test_alarm_bits_ignore_bit_0_and_informational_bits() -> None:
    assert alarm_bits(0x0002) == ComponentStatusBits.FIRE
    assert alarm_bits(0x0003) == ComponentStatusBits.FIRE
    assert alarm_bits(0x0001) == ComponentStatusBits(0)
    assert alarm_bits(0x00E1) == ComponentStatusBits(0)  # started, feedback, delay
    assert alarm_bits(0x011C) == (ComponentStatusBits.FAULT | ComponentStatusBits.DISABLED
                                  | ComponentStatusBits.SUPERVISORY
                                  | ComponentStatusBits.POWER_FAULT)
    assert not is_fire(0x0001)


def test_reserved_bits_survive() -> None:
    assert int(ComponentStatusBits(0x8002)) == 0x8002
    assert int(UitdStatusBits(0x80)) == 0x80


def test_tables() -> None:
    assert system_label(23).zh == "消防电源"  # not 消防电梯 (a known write-up error)
    assert system_label(5).en == "reserved (5)"
    assert component_label(42).en == "point photoelectric smoke detector"
    assert component_label(200).zh == "用户自定义(200)"
    assert ANALOG_TYPES[5].unit == "kPa"
    assert ANALOG_TYPES[2].divisor == 100


@pytest.mark.parametrize(("code", "expected"), [
    (23, SignalClass.FIRE), (24, SignalClass.FIRE), (25, SignalClass.FIRE),
    (31, SignalClass.FIRE), (42, SignalClass.FIRE), (53, SignalClass.FIRE),
    (61, SignalClass.FIRE), (79, SignalClass.FIRE), (10, SignalClass.GAS), (74, SignalClass.GAS),
    (17, SignalClass.ELECTRICAL), (96, SignalClass.SUPERVISORY), (97, SignalClass.SUPERVISORY),
    (99, SignalClass.SUPERVISORY), (91, SignalClass.SUPERVISORY), (111, SignalClass.SUPERVISORY),
    (118, SignalClass.SUPERVISORY), (1, SignalClass.OTHER), (85, SignalClass.OTHER),
    (45, SignalClass.OTHER), (200, SignalClass.OTHER)])
def test_signal_classes(code: int, expected: SignalClass) -> None:
    assert signal_class(code) == expected


def test_every_defined_component_type_is_classified_on_purpose() -> None:
    other = {c for c in COMPONENT_TYPES if signal_class(c) == SignalClass.OTHER}
    assert other == {0, 1, 21, 22, 83, 84, 85, 86, 87, 88}
