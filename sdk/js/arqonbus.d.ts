export declare class ArqonBus {}
export declare class ArqonBusError extends Error {}
