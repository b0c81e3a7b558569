package nvme

import "fmt"

// AdminOpcode is the opcode of an admin command (NVMe Base Specification
// 2.0, §5, Figure 28 "Opcodes for Admin Commands").
type AdminOpcode uint8

// Admin command opcodes.
const (
	AdminDeleteIOSQ               AdminOpcode = 0x00
	AdminCreateIOSQ               AdminOpcode = 0x01
	AdminGetLogPage               AdminOpcode = 0x02
	AdminDeleteIOCQ               AdminOpcode = 0x04
	AdminCreateIOCQ               AdminOpcode = 0x05
	AdminIdentify                 AdminOpcode = 0x06
	AdminAbort                    AdminOpcode = 0x08
	AdminSetFeatures              AdminOpcode = 0x09
	AdminGetFeatures              AdminOpcode = 0x0a
	AdminAsyncEventRequest        AdminOpcode = 0x0c
	AdminNamespaceManagement      AdminOpcode = 0x0d
	AdminFirmwareCommit           AdminOpcode = 0x10
	AdminFirmwareImageDownload    AdminOpcode = 0x11
	AdminDeviceSelfTest           AdminOpcode = 0x14
	AdminNamespaceAttachment      AdminOpcode = 0x15
	AdminKeepAlive                AdminOpcode = 0x18
	AdminDirectiveSend            AdminOpcode = 0x19
	AdminDirectiveReceive         AdminOpcode = 0x1a
	AdminVirtualizationManagement AdminOpcode = 0x1c
	AdminNVMeMISend               AdminOpcode = 0x1d
	AdminNVMeMIReceive            AdminOpcode = 0x1e
	AdminCapacityManagement       AdminOpcode = 0x20
	AdminLockdown                 AdminOpcode = 0x24
	AdminDoorbellBufferConfig     AdminOpcode = 0x7c
	AdminFabricsCommands          AdminOpcode = 0x7f
	AdminFormatNVM                AdminOpcode = 0x80
	AdminSecuritySend             AdminOpcode = 0x81
	AdminSecurityReceive          AdminOpcode = 0x82
	AdminSanitize                 AdminOpcode = 0x84
	AdminGetLBAStatus             AdminOpcode = 0x86
)

var adminOpcodeNames = map[AdminOpcode]string{
	AdminDeleteIOSQ:               "Delete I/O Submission Queue",
	AdminCreateIOSQ:               "Create I/O Submission Queue",
	AdminGetLogPage:               "Get Log Page",
	AdminDeleteIOCQ:               "Delete I/O Completion Queue",
	AdminCreateIOCQ:               "Create I/O Completion Queue",
	AdminIdentify:                 "Identify",
	AdminAbort:                    "Abort",
	AdminSetFeatures:              "Set Features",
	AdminGetFeatures:              "Get Features",
	AdminAsyncEventRequest:        "Asynchronous Event Request",
	AdminNamespaceManagement:      "Namespace Management",
	AdminFirmwareCommit:           "Firmware Commit",
	AdminFirmwareImageDownload:    "Firmware Image Download",
	AdminDeviceSelfTest:           "Device Self-test",
	AdminNamespaceAttachment:      "Namespace Attachment",
	AdminKeepAlive:                "Keep Alive",
	AdminDirectiveSend:            "Directive Send",
	AdminDirectiveReceive:         "Directive Receive",
	AdminVirtualizationManagement: "Virtualization Management",
	AdminNVMeMISend:               "NVMe-MI Send",
	AdminNVMeMIReceive:            "NVMe-MI Receive",
	AdminCapacityManagement:       "Capacity Management",
	AdminLockdown:                 "Lockdown",
	AdminDoorbellBufferConfig:     "Doorbell Buffer Config",
	AdminFabricsCommands:          "Fabrics Commands",
	AdminFormatNVM:                "Format NVM",
	AdminSecuritySend:             "Security Send",
	AdminSecurityReceive:          "Security Receive",
	AdminSanitize:                 "Sanitize",
	AdminGetLBAStatus:             "Get LBA Status",
}

// String returns the spec name ("Identify"), or "admin opcode 0xNN" for
// one this package does not know (vendor specific opcodes are 0xc0-0xff).
func (op AdminOpcode) String() string {
	if n, ok := adminOpcodeNames[op]; ok {
		return n
	}
	return fmt.Sprintf("admin opcode 0x%02x", uint8(op))
}

// NVMOpcode is the opcode of an I/O command of the NVM command set (NVM
// Command Set Specification 1.0, §3, Figure 17 "Opcodes for NVM Commands").
type NVMOpcode uint8

// NVM command set opcodes.
const (
	NVMFlush               NVMOpcode = 0x00
	NVMWrite               NVMOpcode = 0x01
	NVMRead                NVMOpcode = 0x02
	NVMWriteUncorrectable  NVMOpcode = 0x04
	NVMCompare             NVMOpcode = 0x05
	NVMWriteZeroes         NVMOpcode = 0x08
	NVMDatasetManagement   NVMOpcode = 0x09
	NVMVerify              NVMOpcode = 0x0c
	NVMReservationRegister NVMOpcode = 0x0d
	NVMReservationReport   NVMOpcode = 0x0e
	NVMReservationAcquire  NVMOpcode = 0x11
	NVMReservationRelease  NVMOpcode = 0x15
	NVMCopy                NVMOpcode = 0x19
)

var nvmOpcodeNames = map[NVMOpcode]string{
	NVMFlush:               "Flush",
	NVMWrite:               "Write",
	NVMRead:                "Read",
	NVMWriteUncorrectable:  "Write Uncorrectable",
	NVMCompare:             "Compare",
	NVMWriteZeroes:         "Write Zeroes",
	NVMDatasetManagement:   "Dataset Management",
	NVMVerify:              "Verify",
	NVMReservationRegister: "Reservation Register",
	NVMReservationReport:   "Reservation Report",
	NVMReservationAcquire:  "Reservation Acquire",
	NVMReservationRelease:  "Reservation Release",
	NVMCopy:                "Copy",
}

// String returns the spec name ("Read"), or "I/O opcode 0xNN".
func (op NVMOpcode) String() string {
	if n, ok := nvmOpcodeNames[op]; ok {
		return n
	}
	return fmt.Sprintf("I/O opcode 0x%02x", uint8(op))
}

// OpcodeName names opcode op of an admin command (admin true) or an NVM
// I/O command, for messages.
func OpcodeName(op uint8, admin bool) string {
	if admin {
		return AdminOpcode(op).String()
	}
	return NVMOpcode(op).String()
}

// CNS is the Controller or Namespace Structure an Identify command returns
// (CDW10 bits 7:0; NVMe 2.0 §5.17.1, Figure 273).
type CNS uint8

// Identify CNS values.
const (
	CNSNamespace               CNS = 0x00 // Identify Namespace (NVM command set), NSID
	CNSController              CNS = 0x01 // Identify Controller
	CNSActiveNamespaces        CNS = 0x02 // active NSIDs above CDW1.NSID, 1024 at most
	CNSNamespaceDescriptors    CNS = 0x03 // Namespace Identification Descriptor list
	CNSNVMSetList              CNS = 0x04
	CNSIOCSNamespace           CNS = 0x05 // I/O command set specific Identify Namespace
	CNSIOCSController          CNS = 0x06 // I/O command set specific Identify Controller
	CNSIOCSActiveNamespaces    CNS = 0x07
	CNSIndependentNamespace    CNS = 0x08 // I/O command set independent Identify Namespace
	CNSAllocatedNamespaces     CNS = 0x10
	CNSAllocatedNamespace      CNS = 0x11
	CNSNamespaceControllers    CNS = 0x12 // controllers attached to NSID
	CNSControllers             CNS = 0x13 // controllers in the subsystem
	CNSPrimaryControllerCaps   CNS = 0x14
	CNSSecondaryControllers    CNS = 0x15
	CNSNamespaceGranularity    CNS = 0x16
	CNSUUIDList                CNS = 0x17
	CNSDomainList              CNS = 0x18
	CNSEnduranceGroupList      CNS = 0x19
	CNSIOCSAllocatedNamespaces CNS = 0x1a
	CNSIOCSAllocatedNamespace  CNS = 0x1b
	CNSIOCommandSets           CNS = 0x1c // I/O Command Set data structure
)

var cnsNames = map[CNS]string{
	CNSNamespace:               "Identify Namespace",
	CNSController:              "Identify Controller",
	CNSActiveNamespaces:        "Active Namespace ID list",
	CNSNamespaceDescriptors:    "Namespace Identification Descriptor list",
	CNSNVMSetList:              "NVM Set list",
	CNSIOCSNamespace:           "I/O Command Set specific Identify Namespace",
	CNSIOCSController:          "I/O Command Set specific Identify Controller",
	CNSIOCSActiveNamespaces:    "I/O Command Set specific Active Namespace ID list",
	CNSIndependentNamespace:    "I/O Command Set Independent Identify Namespace",
	CNSAllocatedNamespaces:     "Allocated Namespace ID list",
	CNSAllocatedNamespace:      "Identify Namespace (allocated)",
	CNSNamespaceControllers:    "Namespace Attached Controller list",
	CNSControllers:             "Controller list",
	CNSPrimaryControllerCaps:   "Primary Controller Capabilities",
	CNSSecondaryControllers:    "Secondary Controller list",
	CNSNamespaceGranularity:    "Namespace Granularity list",
	CNSUUIDList:                "UUID list",
	CNSDomainList:              "Domain list",
	CNSEnduranceGroupList:      "Endurance Group list",
	CNSIOCSAllocatedNamespaces: "I/O Command Set specific Allocated Namespace ID list",
	CNSIOCSAllocatedNamespace:  "I/O Command Set specific Identify Namespace (allocated)",
	CNSIOCommandSets:           "I/O Command Set data structure",
}

func (c CNS) String() string {
	if n, ok := cnsNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CNS 0x%02x", uint8(c))
}

// FeatureID identifies a feature for Get Features and Set Features (CDW10
// bits 7:0; NVMe 2.0 §5.27.1, Figure 317).
type FeatureID uint8

// Feature identifiers.
const (
	FeatureArbitration                    FeatureID = 0x01
	FeaturePowerManagement                FeatureID = 0x02
	FeatureLBARangeType                   FeatureID = 0x03
	FeatureTemperatureThreshold           FeatureID = 0x04
	FeatureErrorRecovery                  FeatureID = 0x05
	FeatureVolatileWriteCache             FeatureID = 0x06
	FeatureNumberOfQueues                 FeatureID = 0x07
	FeatureInterruptCoalescing            FeatureID = 0x08
	FeatureInterruptVectorConfig          FeatureID = 0x09
	FeatureWriteAtomicityNormal           FeatureID = 0x0a
	FeatureAsyncEventConfig               FeatureID = 0x0b
	FeatureAutonomousPowerStateTransition FeatureID = 0x0c
	FeatureHostMemoryBuffer               FeatureID = 0x0d
	FeatureTimestamp                      FeatureID = 0x0e
	FeatureKeepAliveTimer                 FeatureID = 0x0f
	FeatureHostControlledThermalMgmt      FeatureID = 0x10
	FeatureNonOperationalPowerStateConfig FeatureID = 0x11
	FeatureReadRecoveryLevelConfig        FeatureID = 0x12
	FeaturePredictableLatencyModeConfig   FeatureID = 0x13
	FeaturePredictableLatencyModeWindow   FeatureID = 0x14
	FeatureHostBehaviorSupport            FeatureID = 0x16
	FeatureSanitizeConfig                 FeatureID = 0x17
	FeatureEnduranceGroupEventConfig      FeatureID = 0x18
	FeatureIOCommandSetProfile            FeatureID = 0x19
	FeatureSpinupControl                  FeatureID = 0x1a
	FeatureSoftwareProgressMarker         FeatureID = 0x80
	FeatureHostIdentifier                 FeatureID = 0x81
	FeatureReservationNotificationMask    FeatureID = 0x82
	FeatureReservationPersistence         FeatureID = 0x83
	FeatureNamespaceWriteProtectionConfig FeatureID = 0x84
)

var featureNames = map[FeatureID]string{
	FeatureArbitration:                    "Arbitration",
	FeaturePowerManagement:                "Power Management",
	FeatureLBARangeType:                   "LBA Range Type",
	FeatureTemperatureThreshold:           "Temperature Threshold",
	FeatureErrorRecovery:                  "Error Recovery",
	FeatureVolatileWriteCache:             "Volatile Write Cache",
	FeatureNumberOfQueues:                 "Number of Queues",
	FeatureInterruptCoalescing:            "Interrupt Coalescing",
	FeatureInterruptVectorConfig:          "Interrupt Vector Configuration",
	FeatureWriteAtomicityNormal:           "Write Atomicity Normal",
	FeatureAsyncEventConfig:               "Asynchronous Event Configuration",
	FeatureAutonomousPowerStateTransition: "Autonomous Power State Transition",
	FeatureHostMemoryBuffer:               "Host Memory Buffer",
	FeatureTimestamp:                      "Timestamp",
	FeatureKeepAliveTimer:                 "Keep Alive Timer",
	FeatureHostControlledThermalMgmt:      "Host Controlled Thermal Management",
	FeatureNonOperationalPowerStateConfig: "Non-Operational Power State Config",
	FeatureReadRecoveryLevelConfig:        "Read Recovery Level Config",
	FeaturePredictableLatencyModeConfig:   "Predictable Latency Mode Config",
	FeaturePredictableLatencyModeWindow:   "Predictable Latency Mode Window",
	FeatureHostBehaviorSupport:            "Host Behavior Support",
	FeatureSanitizeConfig:                 "Sanitize Config",
	FeatureEnduranceGroupEventConfig:      "Endurance Group Event Configuration",
	FeatureIOCommandSetProfile:            "I/O Command Set Profile",
	FeatureSpinupControl:                  "Spinup Control",
	FeatureSoftwareProgressMarker:         "Software Progress Marker",
	FeatureHostIdentifier:                 "Host Identifier",
	FeatureReservationNotificationMask:    "Reservation Notification Mask",
	FeatureReservationPersistence:         "Reservation Persistence",
	FeatureNamespaceWriteProtectionConfig: "Namespace Write Protection Config",
}

func (f FeatureID) String() string {
	if n, ok := featureNames[f]; ok {
		return n
	}
	return fmt.Sprintf("feature 0x%02x", uint8(f))
}

// NumberOfQueues packs the Set Features (Number of Queues) CDW11: the
// number of I/O submission and completion queues requested, 1..65535 each
// (NVMe 2.0 §5.27.1.5; the register fields are 0-based).
func NumberOfQueues(sq, cq int) (cdw11 uint32, err error) {
	if sq < 1 || sq > 65535 || cq < 1 || cq > 65535 {
		return 0, fmt.Errorf("queue counts sq %d cq %d outside 1..65535: %w", sq, cq, ErrInvalidArgument)
	}
	return uint32(cq-1)<<16 | uint32(sq-1), nil
}

// ParseNumberOfQueues decodes the completion DW0 of Set/Get Features
// (Number of Queues): the numbers of I/O submission and completion queues
// allocated, no longer 0-based.
func ParseNumberOfQueues(dw0 uint32) (sq, cq int) {
	return int(dw0&0xffff) + 1, int(dw0>>16) + 1
}

// LogPageID identifies a log page for Get Log Page (CDW10 bits 7:0; NVMe
// 2.0 §5.16.1, Figure 202).
type LogPageID uint8

// Log page identifiers.
const (
	LogErrorInformation                 LogPageID = 0x01
	LogSMART                            LogPageID = 0x02 // SMART / Health Information
	LogFirmwareSlot                     LogPageID = 0x03
	LogChangedNamespaceList             LogPageID = 0x04
	LogCommandsSupported                LogPageID = 0x05
	LogDeviceSelfTest                   LogPageID = 0x06
	LogTelemetryHostInitiated           LogPageID = 0x07
	LogTelemetryControllerInitiated     LogPageID = 0x08
	LogEnduranceGroupInformation        LogPageID = 0x09
	LogPredictableLatencyPerNVMSet      LogPageID = 0x0a
	LogPredictableLatencyEventAggregate LogPageID = 0x0b
	LogAsymmetricNamespaceAccess        LogPageID = 0x0c
	LogPersistentEvent                  LogPageID = 0x0d
	LogEnduranceGroupEventAggregate     LogPageID = 0x0f
	LogMediaUnitStatus                  LogPageID = 0x10
	LogSupportedCapacityConfigList      LogPageID = 0x11
	LogFeatureIdentifiersSupported      LogPageID = 0x12
	LogNVMeMICommandsSupported          LogPageID = 0x13
	LogCommandAndFeatureLockdown        LogPageID = 0x14
	LogBootPartition                    LogPageID = 0x15
	LogRotationalMedia                  LogPageID = 0x16
	LogDiscovery                        LogPageID = 0x70
	LogReservationNotification          LogPageID = 0x80
	LogSanitizeStatus                   LogPageID = 0x81
)

var logPageNames = map[LogPageID]string{
	LogErrorInformation:                 "Error Information",
	LogSMART:                            "SMART / Health Information",
	LogFirmwareSlot:                     "Firmware Slot Information",
	LogChangedNamespaceList:             "Changed Namespace List",
	LogCommandsSupported:                "Commands Supported and Effects",
	LogDeviceSelfTest:                   "Device Self-test",
	LogTelemetryHostInitiated:           "Telemetry Host-Initiated",
	LogTelemetryControllerInitiated:     "Telemetry Controller-Initiated",
	LogEnduranceGroupInformation:        "Endurance Group Information",
	LogPredictableLatencyPerNVMSet:      "Predictable Latency Per NVM Set",
	LogPredictableLatencyEventAggregate: "Predictable Latency Event Aggregate",
	LogAsymmetricNamespaceAccess:        "Asymmetric Namespace Access",
	LogPersistentEvent:                  "Persistent Event Log",
	LogEnduranceGroupEventAggregate:     "Endurance Group Event Aggregate",
	LogMediaUnitStatus:                  "Media Unit Status",
	LogSupportedCapacityConfigList:      "Supported Capacity Configuration List",
	LogFeatureIdentifiersSupported:      "Feature Identifiers Supported and Effects",
	LogNVMeMICommandsSupported:          "NVMe-MI Commands Supported and Effects",
	LogCommandAndFeatureLockdown:        "Command and Feature Lockdown",
	LogBootPartition:                    "Boot Partition",
	LogRotationalMedia:                  "Rotational Media Information",
	LogDiscovery:                        "Discovery",
	LogReservationNotification:          "Reservation Notification",
	LogSanitizeStatus:                   "Sanitize Status",
}

func (l LogPageID) String() string {
	if n, ok := logPageNames[l]; ok {
		return n
	}
	return fmt.Sprintf("log page 0x%02x", uint8(l))
}
