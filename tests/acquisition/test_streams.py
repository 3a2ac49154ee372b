"""Stream metadata read back: :func:`declared_channels` gives what a stream's ``desc/channels``
declares, checked against an independent reading of the stream's XML with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pylsl
import pytest

from dyadlab.acquisition.streams import (
    ChannelInfo,
    ParticipantInfo,
    SourceLayout,
    declared_channels,
    eeg_stream_info,
)

pytestmark = pytest.mark.integration  # builds real liblsl StreamInfo objects (no outlet, no network)


def _channels_in_xml(info: pylsl.StreamInfo) -> list[ChannelInfo]:
    """The ``channel`` elements of the stream's XML, parsed by ElementTree (not by liblsl)."""
    root = ET.fromstring(info.as_xml())
    return [
        ChannelInfo(element.findtext("label", ""), element.findtext("type", ""), element.findtext("unit", ""))
        for element in root.findall("./desc/channels/channel")
    ]


def test_declared_channels_are_those_a_dyadlab_eeg_stream_writes() -> None:
    layout = SourceLayout(250.0, ["Fz", "Cz", "Pz"], aux_channel_names=["AccX"], description={"board": "test"})
    info = eeg_stream_info("t", "d01", ParticipantInfo("A", "sub-A"), layout)

    channels = declared_channels(info)

    assert channels == _channels_in_xml(info)
    assert channels == [
        ChannelInfo("Fz", "EEG", "microvolts"),
        ChannelInfo("Cz", "EEG", "microvolts"),
        ChannelInfo("Pz", "EEG", "microvolts"),
        ChannelInfo("Marker", "Marker", "code"),  # the board marker channel, last
    ]
    assert len(channels) == info.channel_count()


def test_a_layout_without_board_markers_declares_its_eeg_channels_only() -> None:
    layout = SourceLayout(500.0, ["C3", "C4"], has_marker_channel=False)
    info = eeg_stream_info("t", "d01", ParticipantInfo("B", "sub-B"), layout)

    assert info.channel_count() == 2
    assert declared_channels(info) == [ChannelInfo("C3", "EEG", "microvolts"), ChannelInfo("C4", "EEG", "microvolts")]


def test_declared_channels_of_another_tools_stream() -> None:
    """No declaration: nothing; elements other than ``channel`` inside ``channels`` are not
    channels (as pyxdf reads them); missing fields are empty strings, values are as written."""
    info = pylsl.StreamInfo("amp", "EEG", 2, 100.0, "float32", "amp-1")
    assert declared_channels(info) == []

    channels = info.desc().append_child("channels")
    channels.append_child("channel").append_child_value("label", " C3 ")
    channels.append_child("reference").append_child_value("label", "average")
    second = channels.append_child("channel")
    second.append_child_value("label", "C4")
    second.append_child_value("type", "EEG")

    assert declared_channels(info) == [ChannelInfo(" C3 ", "", ""), ChannelInfo("C4", "EEG", "")]
    assert declared_channels(info) == _channels_in_xml(info)
