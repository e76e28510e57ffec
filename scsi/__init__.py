"""SCSI facts shared by the handler runtime and the initiator."""
