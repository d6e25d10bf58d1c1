export * from './fleet.js';
export * from './platform.js';
export * from './fleet-therapist-import.js';
export * from './fleet-patient-import.js';
